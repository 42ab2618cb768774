// Metadata every Patientkontrakt conformance resource carries (url and name come from
// the canonical and the FSH name).
RuleSet: PKConformance
* ^version = "0.1.0"
* ^status = #draft
* ^experimental = false
* ^publisher = "Patientkontrakt"

// Identifiers are sliced by system; each slice fixes its system (design: domain.md, HL7 Sweden).
RuleSet: SliceIdentifierBySystem
* identifier ^slicing.discriminator.type = #value
* identifier ^slicing.discriminator.path = "system"
* identifier ^slicing.rules = #open
* identifier ^slicing.description = "Identifierare skiljs åt genom sitt system."

// The HSA-id slice: HSA-id of a person, a medarbetaruppdrag, a care unit or a care provider.
RuleSet: HsaIdSlice(card)
* identifier contains hsaId {card}
* identifier[hsaId] ^short = "HSA-id"
* identifier[hsaId] ^definition = "HSA-id: SE + organisationsnummer (10 siffror) + - + alfanumeriskt suffix, högst 31 tecken."
* identifier[hsaId].system 1..1
* identifier[hsaId].system = $hsaid (exactly)
* identifier[hsaId].value 1..1
* obeys pk-hsaid-1

Invariant: pk-hsaid-1
Description: "Ett HSA-id består av SE, ett organisationsnummer med tio siffror, bindestreck och ett alfanumeriskt suffix; högst 31 tecken."
Severity: #error
Expression: "identifier.where(system = 'urn:oid:1.2.752.29.4.19').all(value.matches('^SE([0-9]{10}|16[0-9]{10})-[A-Za-z0-9]+$') and value.length() <= 31)"
