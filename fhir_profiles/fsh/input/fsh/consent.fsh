// Samtycke and spärr as FHIR Consent (R4 privacy-consent pattern; patientdatalagen 2008:355,
// 4 kap 4 § and 6 kap 2–3 §§). The provision's actors are Organizations: the care unit or care
// provider that may read (role IRCP, information recipient) and the care unit or care provider
// whose data the provision is about (role CST, custodian).

RuleSet: PKConsentCommon
* insert PKConformance
* status ^short = "active: gäller; inactive: återkallad eller hävd"
* scope = $consentscope#patient-privacy
* scope ^short = "Alltid patient-privacy"
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category ^slicing.description = "Vår kod i pk-consent-category, och vid behov andra kodningar (t.ex. LOINC 59284-0)."
* patient 1..1
* patient only Reference(PKPatient)
* patient ^short = "Patienten"
* dateTime 1..1
* dateTime ^short = "När patienten gav beskedet"
* performer 1..*
* performer only Reference(PKPatient)
* performer ^short = "Patienten, som ger beskedet"
* organization 0..*
* organization only Reference(PKOrganization)
* organization ^short = "Vårdenheten som registrerade beskedet (sätts alltid av tjänsten, det klienten anger ersätts)"
* provision 1..1
* provision.type 1..1
* provision.period 1..1
* provision.period.start 1..1
* provision.period ^short = "När beskedet gäller: från start, till end om det finns"
* provision.actor 1..*
* provision.actor.role from PKConsentActorRoleVS (required)
* provision.actor.role ^short = "IRCP: får ta del av uppgifterna; CST: vars uppgifter det gäller"
* provision.actor.reference only Reference(PKOrganization)
* provision.actor.reference ^short = "Vårdenheten eller vårdgivaren"
* provision.provision 0..0
* provision.provision ^short = "Används inte: ett besked har en enda bestämmelse"


Profile: PKSamtycke
Parent: Consent
Id: pk-samtycke
Title: "Patientkontrakt: Samtycke"
Description: "Patientens samtycke till att en vårdenhet eller vårdgivare (mottagaren, provision.actor med rollen IRCP) tar del av uppgifter som andra vårdgivare gör tillgängliga genom sammanhållen journalföring (patientdatalagen 6 kap 3 §), och till en SIP. Aktörer med rollen CST begränsar samtycket till de vårdenheters eller vårdgivares uppgifter; utan dem gäller det alla andra vårdgivares uppgifter. Samtycket gäller när status är active och provision.period omfattar tidpunkten."
* insert PKConsentCommon
* obeys pk-samtycke-1
* category contains samtycke 1..1
* category[samtycke] = PKConsentCategory#samtycke
* category[samtycke] ^short = "Samtycke till sammanhållen journalföring"
* policyRule = $v3-ActCode#OPTIN
* policyRule ^short = "OPTIN (R4 ppc-1 kräver policyRule eller policy)"
* provision.type = #permit (exactly)

Invariant: pk-samtycke-1
Description: "Ett samtycke har precis en mottagare: en aktör med rollen IRCP, den vårdenhet eller vårdgivare som får ta del av uppgifterna."
Severity: #error
Expression: "provision.actor.where(role.coding.where(system = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType' and code = 'IRCP').exists()).count() = 1"


Profile: PKSparr
Parent: Consent
Id: pk-sparr
Title: "Patientkontrakt: Spärr"
Description: "Patientens spärr: inre spärr (patientdatalagen 4 kap 4 §) mot vårdgivarens andra vårdenheter, eller yttre spärr (6 kap 2 §) mot andra vårdgivare. Varje aktör (provision.actor, rollen CST) är en vårdenhet eller vårdgivare vars uppgifter spärras. Spärren gäller när status är active och provision.period omfattar tidpunkten; den hävs med status inactive."
* insert PKConsentCommon
* obeys pk-sparr-1
* category contains sparr 1..1
* category[sparr] from PKSparrCategoryVS (required)
* category[sparr] ^short = "Inre spärr eller yttre spärr"
* policyRule = $v3-ActCode#OPTOUT
* policyRule ^short = "OPTOUT (R4 ppc-1 kräver policyRule eller policy)"
* provision.type = #deny (exactly)

Invariant: pk-sparr-1
Description: "En spärr gäller uppgifter hos vårdenheter eller vårdgivare: varje aktör har rollen CST (informationsägare), ingen har rollen IRCP."
Severity: #error
Expression: "provision.actor.all(role.coding.where(system = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType' and code = 'CST').exists())"
