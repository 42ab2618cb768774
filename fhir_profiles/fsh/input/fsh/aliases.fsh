// Systems used across the profiles and examples.
Alias: $personnummer = http://electronichealth.se/identifier/personnummer
Alias: $samordningsnummer = http://electronichealth.se/identifier/samordningsnummer
Alias: $reservnummer = http://electronichealth.se/identifier/nationelltReservnummer
Alias: $hsaid = urn:oid:1.2.752.29.4.19
Alias: $orgnr = urn:oid:2.5.4.97
Alias: $practitioner-role = http://terminology.hl7.org/CodeSystem/practitioner-role
Alias: $ucum = http://unitsofmeasure.org
Alias: $loinc = http://loinc.org
Alias: $v3-ParticipationType = http://terminology.hl7.org/CodeSystem/v3-ParticipationType
Alias: $v3-ActCode = http://terminology.hl7.org/CodeSystem/v3-ActCode
Alias: $consentscope = http://terminology.hl7.org/CodeSystem/consentscope
