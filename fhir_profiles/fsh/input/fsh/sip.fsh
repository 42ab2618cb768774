// SIP, samordnad individuell plan (HSL 2017:30 16 kap 4 §, SoL 2001:453 2 kap 7 §): a CarePlan of
// its own that belongs to a Patientkontrakt (partOf), with the person's consent, the responsible
// organisation and huvudman of each intervention, and the huvudman with overall responsibility.

Extension: PKSipOvergripandeAnsvar
Id: pk-sip-overgripande-ansvar
Title: "SIP: övergripande ansvar"
Description: "Vilken huvudman, region eller kommun, som har det övergripande ansvaret för en samordnad individuell plan (HSL 2017:30 16 kap 4 §: vem av huvudmännen som ska ha det övergripande ansvaret för planen)."
* insert PKConformance
* ^context[0].type = #element
* ^context[0].expression = "CarePlan"
* value[x] 1..1
* value[x] only CodeableConcept
* value[x] from PKOvergripandeAnsvarVS (required)
* value[x] ^short = "region eller kommun"

Extension: PKSipHuvudman
Id: pk-sip-huvudman
Title: "SIP: huvudman för insatsen"
Description: "Vilken huvudman som ansvarar för en insats i en samordnad individuell plan: region, kommun eller annan (HSL 2017:30 16 kap 4 §: vilka insatser respektive huvudman ska svara för)."
* insert PKConformance
* ^context[0].type = #element
* ^context[0].expression = "CarePlan.activity"
* value[x] 1..1
* value[x] only CodeableConcept
* value[x] from PKHuvudmanVS (required)
* value[x] ^short = "region, kommun eller annan"


Profile: PKSip
Parent: CarePlan
Id: pk-sip
Title: "Patientkontrakt: SIP"
Description: "En samordnad individuell plan (SIP) som hör till ett Patientkontrakt (partOf): vilka insatser region, kommun och andra gör (activity, med utförande organisation och huvudman), vem som har det övergripande ansvaret (region eller kommun) och den enskildes samtycke till planen (supportingInfo, ett pk-samtycke). Enheten som skrev planen är author."
* insert PKConformance
* obeys pk-sip-1
* extension ^short = "Tillägg, bland dem det övergripande ansvaret"
* extension contains PKSipOvergripandeAnsvar named overgripandeAnsvar 1..1
* extension[overgripandeAnsvar] ^short = "Huvudmannen med övergripande ansvar: region eller kommun"
* category 1..*
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category ^slicing.description = "Kategorin sip, och vid behov nationell vårdplanstyp."
* category contains sip 1..1
* category[sip] = PKCarePlanCategory#sip
* category[sip] ^short = "Markerar att vårdplanen är en SIP"
* partOf 1..1
* partOf only Reference(PKPatientkontrakt)
* partOf ^short = "Patientkontraktet som planen hör till"
* title 1..1
* title ^short = "Rubrik som den enskilde ser"
* intent = #plan (exactly)
* subject only Reference(PKPatient)
* author 1..1
* author only Reference(PKOrganization)
* author ^short = "Enheten som skrev planen"
* contributor only Reference(PKOrganization)
* contributor ^short = "Enheter som deltar i planen"
* supportingInfo 1..*
* supportingInfo ^slicing.discriminator.type = #type
* supportingInfo ^slicing.discriminator.path = "resolve()"
* supportingInfo ^slicing.rules = #open
* supportingInfo ^slicing.description = "Den enskildes samtycke till planen, och annat underlag."
* supportingInfo contains samtycke 1..1
* supportingInfo[samtycke] only Reference(PKSamtycke)
* supportingInfo[samtycke] ^short = "Den enskildes samtycke till planen (HSL 16 kap 4 §)"
* activity.extension ^short = "Tillägg, bland dem insatsens huvudman"
* activity.extension contains PKSipHuvudman named huvudman 1..1
* activity.extension[huvudman] ^short = "Huvudman för insatsen: region, kommun eller annan"
* activity.detail 1..1
* activity.detail obeys pk-sip-2 and pk-sip-3
* activity.detail.code from PKActivityKindVS (extensible)
* activity.detail.code ^short = "Typ av insats"
* activity.detail.performer 1..*
* activity.detail.performer only Reference(PKOrganization or PKPractitionerRole)
* activity.detail.performer ^short = "Organisationen som ansvarar för insatsen, gärna också medarbetaruppdraget"

Invariant: pk-sip-1
Description: "En SIP är en egen plan som hör till ett Patientkontrakt (partOf), inte själv ett Patientkontrakt."
Severity: #error
Expression: "category.coding.where(system = 'https://patientkontrakt.se/fhir/CodeSystem/pk-careplan-category' and code = 'patientkontrakt').empty()"

Invariant: pk-sip-2
Description: "En insats anger organisationen som ansvarar för den (performer)."
Severity: #error
Expression: "performer.where(type = 'Organization' or reference.startsWith('Organization/') or reference.contains('/Organization/')).exists()"

Invariant: pk-sip-3
Description: "En insats har en typ (code) eller en beskrivning (description)."
Severity: #error
Expression: "code.exists() or description.exists()"
