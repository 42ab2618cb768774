// The agreement itself (CarePlan) and its care team (CareTeam).

Profile: PKPatientkontrakt
Parent: CarePlan
Id: pk-patientkontrakt
Title: "Patientkontrakt"
Description: "Patientkontraktet: överenskommelsen som patient och vård skriver tillsammans om vad som ska hända, när och vem patienten vänder sig till. Ansvarig vårdenhet är author, enheter från region och kommun som deltar är contributor, vårdteamet (med fast vårdkontakt) är careTeam, målen är goal och de planerade aktiviteterna är activity."
* insert PKConformance
* obeys pk-patientkontrakt-2
* category 1..*
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category ^slicing.description = "Kategorin patientkontrakt, och vid behov nationell vårdplanstyp (SIP, VP, SVP, ...)."
* category contains patientkontrakt 1..1
* category[patientkontrakt] = PKCarePlanCategory#patientkontrakt
* category[patientkontrakt] ^short = "Markerar att vårdplanen är ett Patientkontrakt"
* title 1..1
* title ^short = "Rubrik som patienten ser"
* description ^short = "Överenskommelsen i klartext"
* intent = #plan (exactly)
* subject only Reference(PKPatient)
* period 1..1
* period.start 1..1
* period ^short = "När överenskommelsen gäller"
* author 1..1
* author only Reference(PKOrganization)
* author ^short = "Ansvarig vårdenhet"
* contributor only Reference(PKOrganization)
* contributor ^short = "Enheter från region och kommun som deltar"
* careTeam 1..1
* careTeam only Reference(PKVardteam)
* goal only Reference(PKMal)
* activity obeys pk-patientkontrakt-3
* activity.reference only Reference(PKAktivitet)
* activity.reference ^short = "Bokad tid (Appointment)"
* activity.detail obeys pk-patientkontrakt-1
* activity.detail.code 1..1
* activity.detail.code from PKActivityKindVS (required)
* activity.detail.code ^short = "Typ av aktivitet"
* activity.detail.scheduled[x] ^short = "När: tidsperiod, återkommande tid eller fritext"
* activity.detail.performer 1..*
* activity.detail.performer only Reference(PKOrganization or PKPractitionerRole)
* activity.detail.performer ^short = "Vem som utför: minst en organisation, gärna också medarbetaruppdraget"
* activity.detail.location ^short = "Var aktiviteten sker"

Invariant: pk-patientkontrakt-1
Description: "En aktivitet anger minst en organisation som utförare."
Severity: #error
Expression: "performer.where(type = 'Organization' or reference.startsWith('Organization/') or reference.contains('/Organization/')).exists()"

Invariant: pk-patientkontrakt-2
Description: "En aktivitet med status scheduled eller not-started har en tid (activity.detail.scheduled[x])."
Severity: #error
Expression: "activity.detail.where(status = 'scheduled' or status = 'not-started').all(scheduled.exists())"

Invariant: pk-patientkontrakt-3
Description: "En aktivitet har antingen en beskrivning (detail) eller en bokad tid (reference)."
Severity: #error
Expression: "detail.exists() or reference.exists()"


Profile: PKVardteam
Parent: CareTeam
Id: pk-vardteam
Title: "Patientkontrakt: Vårdteam"
Description: "Vårdteamet kring ett Patientkontrakt: precis en gällande fast vårdkontakt (regeln kontrolleras av tjänsten, som också behåller historiken vid byte), fast läkarkontakt, patienten, närstående och kommunens kontaktperson. Varje roll har en period, så att byten av fast vårdkontakt finns kvar som historik."
* insert PKConformance
* obeys pk-vardteam-2
* subject 1..1
* subject only Reference(PKPatient)
* managingOrganization 1..1
* managingOrganization only Reference(PKOrganization)
* managingOrganization ^short = "Ansvarig vårdenhet (samma som Patientkontraktets author)"
* participant 1..*
* participant.role 1..*
* participant.role from PKCareTeamRoleVS (extensible)
* participant ^slicing.discriminator.type = #pattern
* participant ^slicing.discriminator.path = "role"
* participant ^slicing.rules = #open
* participant ^slicing.description = "Deltagare skiljs åt genom sin roll (pk-careteam-role)."
* participant contains
    fastVardkontakt 1..* and
    fastLakarkontakt 0..* and
    patient 0..1 and
    kontaktpersonKommun 0..*
* participant[fastVardkontakt] ^short = "Fast vårdkontakt (patientlagen 6 kap 2 §), med historik"
* participant[fastVardkontakt].role 1..1
* participant[fastVardkontakt].role = PKCareTeamRole#fast-vardkontakt
* participant[fastVardkontakt].member 1..1
* participant[fastVardkontakt].member only Reference(PKPractitionerRole)
* participant[fastVardkontakt].onBehalfOf 0..0
* participant[fastVardkontakt].onBehalfOf ^short = "Används inte: enheten är medarbetaruppdragets organization (ctm-1)"
* participant[fastVardkontakt].period 1..1
* participant[fastVardkontakt].period.start 1..1
* participant[fastLakarkontakt] ^short = "Fast läkarkontakt (HSL 7 kap 3 §)"
* participant[fastLakarkontakt].role 1..1
* participant[fastLakarkontakt].role = PKCareTeamRole#fast-lakarkontakt
* participant[fastLakarkontakt].member 1..1
* participant[fastLakarkontakt].member only Reference(PKPractitionerRole)
* participant[fastLakarkontakt].onBehalfOf 0..0
* participant[fastLakarkontakt].period 1..1
* participant[fastLakarkontakt].period.start 1..1
* participant[patient] ^short = "Patienten själv"
* participant[patient].role 1..1
* participant[patient].role = PKCareTeamRole#patient
* participant[patient].member 1..1
* participant[patient].member only Reference(PKPatient)
* participant[kontaktpersonKommun] ^short = "Kommunens kontaktperson"
* participant[kontaktpersonKommun].role 1..1
* participant[kontaktpersonKommun].role = PKCareTeamRole#kontaktperson-kommun
* participant[kontaktpersonKommun].member 1..1
* participant[kontaktpersonKommun].member only Reference(PKPractitionerRole)
* participant[kontaktpersonKommun].onBehalfOf 0..0

Invariant: pk-vardteam-2
Description: "Roller från kodverket pk-careteam-role är koder som finns i kodverket."
Severity: #error
Expression: "participant.role.coding.where(system = 'https://patientkontrakt.se/fhir/CodeSystem/pk-careteam-role').all(code = 'fast-vardkontakt' or code = 'fast-lakarkontakt' or code = 'patient' or code = 'narstaende' or code = 'kontaktperson-kommun' or code = 'ovrig')"
