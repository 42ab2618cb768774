// Patient, Practitioner and PractitionerRole (medarbetaruppdrag).

Profile: PKPatient
Parent: Patient
Id: pk-patient
Title: "Patientkontrakt: Patient"
Description: "Patienten i ett Patientkontrakt, identifierad med personnummer, samordningsnummer eller reservnummer. Personnummer och samordningsnummer lagras med tolv siffror utan bindestreck."
* insert PKConformance
* obeys pk-patient-1
* identifier 1..*
* insert SliceIdentifierBySystem
* identifier contains
    personnummer 0..1 and
    samordningsnummer 0..1 and
    reservnummer 0..1
* identifier[personnummer] ^short = "Personnummer (12 siffror)"
* identifier[personnummer].system 1..1
* identifier[personnummer].system = $personnummer (exactly)
* identifier[personnummer].value 1..1
* identifier[samordningsnummer] ^short = "Samordningsnummer (12 siffror, dag + 60)"
* identifier[samordningsnummer].system 1..1
* identifier[samordningsnummer].system = $samordningsnummer (exactly)
* identifier[samordningsnummer].value 1..1
* identifier[reservnummer] ^short = "Nationellt reservnummer"
* identifier[reservnummer].system 1..1
* identifier[reservnummer].system = $reservnummer (exactly)
* identifier[reservnummer].value 1..1
* name 1..*

Invariant: pk-patient-1
Description: "Personnummer och samordningsnummer anges med tolv siffror utan bindestreck (ÅÅÅÅMMDDNNNK)."
Severity: #error
Expression: "identifier.where(system = 'http://electronichealth.se/identifier/personnummer' or system = 'http://electronichealth.se/identifier/samordningsnummer').all(value.matches('^[0-9]{12}$'))"


Profile: PKPractitioner
Parent: Practitioner
Id: pk-practitioner
Title: "Patientkontrakt: Personal"
Description: "En person i vården eller kommunen, identifierad med sitt person-HSA-id."
* insert PKConformance
* identifier 1..*
* insert SliceIdentifierBySystem
* insert HsaIdSlice(1..1)
* name 1..*


Profile: PKPractitionerRole
Parent: PractitionerRole
Id: pk-practitioner-role
Title: "Patientkontrakt: Medarbetaruppdrag"
Description: "Ett medarbetaruppdrag: personen (practitioner) som arbetar för en vårdenhet (organization). Identifieraren är uppdragets HSA-id. Läkare bär koden http://terminology.hl7.org/CodeSystem/practitioner-role#doctor."
* insert PKConformance
* insert SliceIdentifierBySystem
* insert HsaIdSlice(0..1)
* identifier[hsaId] ^short = "Medarbetaruppdragets HSA-id"
* practitioner 1..1
* practitioner only Reference(PKPractitioner)
* organization 1..1
* organization only Reference(PKOrganization)
* organization ^short = "Vårdenheten (eller kommunens enhet) som uppdraget gäller"
* code 0..*
* code ^short = "Yrkesroll; läkare: practitioner-role#doctor, sjuksköterska: practitioner-role#nurse"
* telecom ^short = "Telefon och e-post i uppdraget; ett direktnummer till personen"
* availableTime ^short = "När direktnumret svarar (telefontid)"


Profile: PKOrganization
Parent: Organization
Id: pk-organization
Title: "Patientkontrakt: Organisation"
Description: "En vårdgivare, vårdenhet eller kommunal enhet, identifierad med HSA-id. Typen anger huvudman (region, kommun, privat vårdgivare) och, för enheter, vilken sorts enhet."
* insert PKConformance
* identifier 1..*
* insert SliceIdentifierBySystem
* insert HsaIdSlice(1..1)
* identifier contains organisationsnummer 0..1
* identifier[organisationsnummer] ^short = "Organisationsnummer (vårdgivare, kommun)"
* identifier[organisationsnummer].system 1..1
* identifier[organisationsnummer].system = $orgnr (exactly)
* identifier[organisationsnummer].value 1..1
* name 1..1
* type 1..*
* type ^slicing.discriminator.type = #value
* type ^slicing.discriminator.path = "coding.system"
* type ^slicing.rules = #open
* type ^slicing.description = "Typer skiljs åt genom kodverket."
* type contains
    kind 1..1 and
    unitType 0..1
* type[kind] ^short = "Huvudman: region, kommun eller privat vårdgivare"
* type[kind] from PKOrganizationKindVS (required)
* type[kind].coding 1..1
* type[kind].coding.system 1..1
* type[kind].coding.system = Canonical(PKOrganizationKind) (exactly)
* type[kind].coding.code 1..1
* type[unitType] ^short = "Typ av enhet: vårdcentral, sjukhusklinik, hemsjukvård, hemtjänst, annan"
* type[unitType] from PKCareUnitTypeVS (required)
* type[unitType].coding 1..1
* type[unitType].coding.system 1..1
* type[unitType].coding.system = Canonical(PKCareUnitType) (exactly)
* type[unitType].coding.code 1..1
* partOf only Reference(PKOrganization)
* partOf ^short = "Vårdgivaren eller kommunen som enheten hör till"
* telecom ^short = "Enhetens telefon och e-post; telefontid i tillägget pk-available-time"
* address ^short = "Enhetens besöksadress; öppettider i tillägget pk-available-time"
