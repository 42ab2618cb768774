// Examples: Tolvan Tolvansson's Patientkontrakt with Vårdcentralen Norr (Region Exempel),
// Medicinkliniken at Länssjukhuset Exempel and the hemtjänst of Exempels kommun.
// HSA-ids use the organisationsnummer 232100-0016 (region) and 212000-0126 (kommun), both
// Luhn-valid; the personnummer is Skatteverket's test number 19121212-1212.

// --- Organisations --------------------------------------------------------------------

Instance: pk-example-org-region-exempel
InstanceOf: PKOrganization
Usage: #example
Title: "Region Exempel"
Description: "Vårdgivaren Region Exempel."
* identifier[hsaId].value = "SE2321000016-0001"
* identifier[organisationsnummer].value = "2321000016"
* active = true
* name = "Region Exempel"
* type[kind] = PKOrganizationKind#region "Region"
* telecom[0].system = #phone
* telecom[0].value = "+46 10 100 00 00"
* telecom[0].use = #work

Instance: pk-example-org-vc-norr
InstanceOf: PKOrganization
Usage: #example
Title: "Vårdcentralen Norr"
Description: "Vårdenheten Vårdcentralen Norr i Region Exempel, ansvarig för patientkontraktet."
* identifier[hsaId].value = "SE2321000016-1001"
* active = true
* name = "Vårdcentralen Norr"
* type[kind] = PKOrganizationKind#region "Region"
* type[unitType] = PKCareUnitType#vardcentral "Vårdcentral"
* telecom[0].system = #phone
* telecom[0].value = "+46 10 123 45 00"
* telecom[0].use = #work
* telecom[0].extension[PKAvailableTime][0].extension[daysOfWeek][0].valueCode = #mon
* telecom[0].extension[PKAvailableTime][0].extension[daysOfWeek][1].valueCode = #tue
* telecom[0].extension[PKAvailableTime][0].extension[daysOfWeek][2].valueCode = #wed
* telecom[0].extension[PKAvailableTime][0].extension[daysOfWeek][3].valueCode = #thu
* telecom[0].extension[PKAvailableTime][0].extension[daysOfWeek][4].valueCode = #fri
* telecom[0].extension[PKAvailableTime][0].extension[availableStartTime].valueTime = "08:00:00"
* telecom[0].extension[PKAvailableTime][0].extension[availableEndTime].valueTime = "10:00:00"
* address.use = #work
* address.type = #both
* address.line = "Norra vägen 12"
* address.postalCode = "123 45"
* address.city = "Exempelstad"
* address.country = "SE"
* address.extension[PKAvailableTime][0].extension[daysOfWeek][0].valueCode = #mon
* address.extension[PKAvailableTime][0].extension[daysOfWeek][1].valueCode = #tue
* address.extension[PKAvailableTime][0].extension[daysOfWeek][2].valueCode = #wed
* address.extension[PKAvailableTime][0].extension[daysOfWeek][3].valueCode = #thu
* address.extension[PKAvailableTime][0].extension[daysOfWeek][4].valueCode = #fri
* address.extension[PKAvailableTime][0].extension[availableStartTime].valueTime = "08:00:00"
* address.extension[PKAvailableTime][0].extension[availableEndTime].valueTime = "17:00:00"
* partOf = Reference(pk-example-org-region-exempel)

Instance: pk-example-org-medicinkliniken
InstanceOf: PKOrganization
Usage: #example
Title: "Medicinkliniken, Länssjukhuset Exempel"
Description: "Sjukhusklinik i Region Exempel som följer upp patientens hjärtsvikt."
* identifier[hsaId].value = "SE2321000016-1002"
* active = true
* name = "Medicinkliniken, Länssjukhuset Exempel"
* type[kind] = PKOrganizationKind#region "Region"
* type[unitType] = PKCareUnitType#sjukhusklinik "Sjukhusklinik"
* telecom[0].system = #phone
* telecom[0].value = "+46 10 123 60 00"
* telecom[0].use = #work
* partOf = Reference(pk-example-org-region-exempel)

Instance: pk-example-org-exempels-kommun
InstanceOf: PKOrganization
Usage: #example
Title: "Exempels kommun"
Description: "Kommunen som huvudman för hemtjänsten."
* identifier[hsaId].value = "SE2120000126-0001"
* identifier[organisationsnummer].value = "2120000126"
* active = true
* name = "Exempels kommun"
* type[kind] = PKOrganizationKind#kommun "Kommun"
* telecom[0].system = #phone
* telecom[0].value = "+46 8 555 100 00"
* telecom[0].use = #work

Instance: pk-example-org-hemtjansten-norr
InstanceOf: PKOrganization
Usage: #example
Title: "Hemtjänsten Norr, Exempels kommun"
Description: "Kommunens hemtjänstgrupp som ger patienten insatser varje dag."
* identifier[hsaId].value = "SE2120000126-2001"
* active = true
* name = "Hemtjänsten Norr"
* type[kind] = PKOrganizationKind#kommun "Kommun"
* type[unitType] = PKCareUnitType#hemtjanst "Hemtjänst"
* telecom[0].system = #phone
* telecom[0].value = "+46 8 555 123 40"
* telecom[0].use = #work
* partOf = Reference(pk-example-org-exempels-kommun)

// --- People and their medarbetaruppdrag --------------------------------------------

Instance: pk-example-patient-tolvan
InstanceOf: PKPatient
Usage: #example
Title: "Tolvan Tolvansson"
Description: "Patient med hjärtsvikt och diabetes som har vård från både region och kommun."
* identifier[personnummer].value = "191212121212"
* active = true
* name[0].use = #official
* name[0].family = "Tolvansson"
* name[0].given = "Tolvan"
* name[0].text = "Tolvan Tolvansson"
* telecom[0].system = #phone
* telecom[0].value = "+46 70 123 12 12"
* telecom[0].use = #mobile
* gender = #male
* birthDate = "1912-12-12"
* address[0].use = #home
* address[0].line = "Tolvansvägen 12"
* address[0].postalCode = "123 46"
* address[0].city = "Exempelstad"
* address[0].country = "SE"
* communication[0].language = urn:ietf:bcp:47#sv "svenska"
* communication[0].preferred = true
* generalPractitioner[0] = Reference(pk-example-org-vc-norr)
* generalPractitioner[1] = Reference(pk-example-role-erik-vc-norr)

Instance: pk-example-practitioner-anna
InstanceOf: PKPractitioner
Usage: #example
Title: "Anna Andersson"
Description: "Distriktssköterska, fast vårdkontakt sedan november 2026."
* identifier[hsaId].value = "SE2321000016-2001"
* active = true
* name[0].family = "Andersson"
* name[0].given = "Anna"
* name[0].text = "Anna Andersson"

Instance: pk-example-practitioner-bengt
InstanceOf: PKPractitioner
Usage: #example
Title: "Bengt Berg"
Description: "Sjuksköterska, patientens första fasta vårdkontakt."
* identifier[hsaId].value = "SE2321000016-2002"
* active = true
* name[0].family = "Berg"
* name[0].given = "Bengt"
* name[0].text = "Bengt Berg"

Instance: pk-example-practitioner-erik
InstanceOf: PKPractitioner
Usage: #example
Title: "Erik Ek"
Description: "Specialist i allmänmedicin, fast läkarkontakt."
* identifier[hsaId].value = "SE2321000016-2003"
* active = true
* name[0].family = "Ek"
* name[0].given = "Erik"
* name[0].text = "Erik Ek"

Instance: pk-example-practitioner-karin
InstanceOf: PKPractitioner
Usage: #example
Title: "Karin Karlsson"
Description: "Samordnare i Exempels kommun, kommunens kontaktperson."
* identifier[hsaId].value = "SE2120000126-3001"
* active = true
* name[0].family = "Karlsson"
* name[0].given = "Karin"
* name[0].text = "Karin Karlsson"

Instance: pk-example-role-anna-vc-norr
InstanceOf: PKPractitionerRole
Usage: #example
Title: "Anna Andersson, Vårdcentralen Norr"
Description: "Medarbetaruppdrag för vård och behandling: sjuksköterska på Vårdcentralen Norr."
* identifier[hsaId].value = "SE2321000016-4001"
* active = true
* period.start = "2024-02-01"
* practitioner = Reference(pk-example-practitioner-anna)
* organization = Reference(pk-example-org-vc-norr)
* code[0] = $practitioner-role#nurse "Nurse"
* code[0].text = "Distriktssköterska"
* telecom[0].system = #phone
* telecom[0].value = "+46 10 123 45 21"
* telecom[0].use = #work
* availableTime[0].daysOfWeek[0] = #mon
* availableTime[0].daysOfWeek[1] = #tue
* availableTime[0].daysOfWeek[2] = #wed
* availableTime[0].daysOfWeek[3] = #thu
* availableTime[0].availableStartTime = "08:00:00"
* availableTime[0].availableEndTime = "09:00:00"

Instance: pk-example-role-bengt-vc-norr
InstanceOf: PKPractitionerRole
Usage: #example
Title: "Bengt Berg, Vårdcentralen Norr"
Description: "Medarbetaruppdrag för vård och behandling: sjuksköterska på Vårdcentralen Norr."
* identifier[hsaId].value = "SE2321000016-4002"
* active = true
* period.start = "2019-08-15"
* practitioner = Reference(pk-example-practitioner-bengt)
* organization = Reference(pk-example-org-vc-norr)
* code[0] = $practitioner-role#nurse "Nurse"
* code[0].text = "Sjuksköterska"

Instance: pk-example-role-erik-vc-norr
InstanceOf: PKPractitionerRole
Usage: #example
Title: "Erik Ek, Vårdcentralen Norr"
Description: "Medarbetaruppdrag för vård och behandling: läkare på Vårdcentralen Norr."
* identifier[hsaId].value = "SE2321000016-4003"
* active = true
* period.start = "2021-01-04"
* practitioner = Reference(pk-example-practitioner-erik)
* organization = Reference(pk-example-org-vc-norr)
* code[0] = $practitioner-role#doctor "Doctor"
* code[0].text = "Specialist i allmänmedicin"
* telecom[0].system = #phone
* telecom[0].value = "+46 10 123 45 30"
* telecom[0].use = #work

Instance: pk-example-role-karin-hemtjansten
InstanceOf: PKPractitionerRole
Usage: #example
Title: "Karin Karlsson, Hemtjänsten Norr"
Description: "Uppdrag som samordnare i hemtjänsten i Exempels kommun."
* identifier[hsaId].value = "SE2120000126-4001"
* active = true
* practitioner = Reference(pk-example-practitioner-karin)
* organization = Reference(pk-example-org-hemtjansten-norr)
* code[0].text = "Samordnare hemtjänst"
* telecom[0].system = #phone
* telecom[0].value = "+46 8 555 123 41"
* telecom[0].use = #work

// --- The agreement -------------------------------------------------------------------

Instance: pk-example-vardteam-tolvan
InstanceOf: PKVardteam
Usage: #example
Title: "Vårdteamet kring Tolvan Tolvansson"
Description: "Fast vårdkontakt (bytt i november 2026, historiken kvar), fast läkarkontakt, patienten och kommunens kontaktperson."
* status = #active
* name = "Vårdteam för Tolvan Tolvansson"
* subject = Reference(pk-example-patient-tolvan)
* period.start = "2026-09-15"
* managingOrganization = Reference(pk-example-org-vc-norr)
* participant[fastVardkontakt][0].role = PKCareTeamRole#fast-vardkontakt "Fast vårdkontakt"
* participant[fastVardkontakt][0].member = Reference(pk-example-role-bengt-vc-norr)
* participant[fastVardkontakt][0].period.start = "2026-09-15"
* participant[fastVardkontakt][0].period.end = "2026-10-31"
* participant[fastVardkontakt][1].role = PKCareTeamRole#fast-vardkontakt "Fast vårdkontakt"
* participant[fastVardkontakt][1].member = Reference(pk-example-role-anna-vc-norr)
* participant[fastVardkontakt][1].period.start = "2026-11-01"
* participant[fastLakarkontakt][0].role = PKCareTeamRole#fast-lakarkontakt "Fast läkarkontakt"
* participant[fastLakarkontakt][0].member = Reference(pk-example-role-erik-vc-norr)
* participant[fastLakarkontakt][0].period.start = "2026-09-15"
* participant[patient].role = PKCareTeamRole#patient "Patient"
* participant[patient].member = Reference(pk-example-patient-tolvan)
* participant[patient].period.start = "2026-09-15"
* participant[kontaktpersonKommun][0].role = PKCareTeamRole#kontaktperson-kommun "Kontaktperson i kommunen"
* participant[kontaktpersonKommun][0].member = Reference(pk-example-role-karin-hemtjansten)
* participant[kontaktpersonKommun][0].period.start = "2026-09-15"

Instance: pk-example-mal-handla-sjalv
InstanceOf: PKMal
Usage: #example
Title: "Mål: handla själv"
Description: "Patientens eget mål (vad som är viktigt för mig)."
* lifecycleStatus = #active
* achievementStatus = http://terminology.hl7.org/CodeSystem/goal-achievement#in-progress "In Progress"
* description.text = "Jag vill kunna gå till affären och handla själv igen."
* subject = Reference(pk-example-patient-tolvan)
* startDate = "2026-09-15"
* target[0].dueDate = "2027-05-31"
* expressedBy = Reference(pk-example-patient-tolvan)

Instance: pk-example-mal-hba1c
InstanceOf: PKMal
Usage: #example
Title: "Mål: HbA1c under 52 mmol/mol"
Description: "Fast läkarkontaktens mål för blodsockret."
* lifecycleStatus = #active
* description.text = "Långtidssockret (HbA1c) ska vara under 52 mmol/mol."
* subject = Reference(pk-example-patient-tolvan)
* startDate = "2026-09-15"
* target[0].measure = http://loinc.org#59261-8 "Hemoglobin A1c/Hemoglobin.total in Blood by IFCC protocol"
* target[0].detailQuantity.comparator = #<
* target[0].detailQuantity.value = 52
* target[0].detailQuantity.unit = "mmol/mol"
* target[0].detailQuantity.system = "http://unitsofmeasure.org"
* target[0].detailQuantity.code = #mmol/mol
* target[0].dueDate = "2027-03-31"
* expressedBy = Reference(pk-example-role-erik-vc-norr)

Instance: pk-example-aktivitet-besok
InstanceOf: PKAktivitet
Usage: #example
Title: "Besök hos fast vårdkontakt"
Description: "Bokat besök hos Anna Andersson på Vårdcentralen Norr."
* status = #booked
* serviceType = PKActivityKind#besok "Besök"
* description = "Besök hos din fasta vårdkontakt Anna Andersson: vi går igenom planen och tar blodtryck."
* start = "2026-12-08T09:00:00+01:00"
* end = "2026-12-08T09:30:00+01:00"
* minutesDuration = 30
* participant[patient].actor = Reference(pk-example-patient-tolvan)
* participant[patient].status = #accepted
* participant[performer][0].actor = Reference(pk-example-role-anna-vc-norr)
* participant[performer][0].status = #accepted

Instance: pk-example-aktivitet-video
InstanceOf: PKAktivitet
Usage: #example
Title: "Videobesök hos fast läkarkontakt"
Description: "Bokat videobesök hos Erik Ek efter provsvaren."
* status = #booked
* serviceType = PKActivityKind#videobesok "Videobesök"
* description = "Videobesök med din läkare Erik Ek om provsvaren och medicinerna. Du får en länk i 1177 dagen innan."
* start = "2027-01-19T14:00:00+01:00"
* end = "2027-01-19T14:20:00+01:00"
* minutesDuration = 20
* participant[patient].actor = Reference(pk-example-patient-tolvan)
* participant[patient].status = #accepted
* participant[performer][0].actor = Reference(pk-example-role-erik-vc-norr)
* participant[performer][0].status = #accepted

Instance: pk-example-patientkontrakt-tolvan
InstanceOf: PKPatientkontrakt
Usage: #example
Title: "Tolvan Tolvanssons patientkontrakt"
Description: "Överenskommelse mellan Tolvan Tolvansson, Vårdcentralen Norr, Medicinkliniken och hemtjänsten i Exempels kommun."
* status = #active
* title = "Mitt patientkontrakt"
* description = "Tolvan och Vårdcentralen Norr har kommit överens om det här. Du vänder dig i första hand till din fasta vårdkontakt Anna Andersson, telefon 010-123 45 21 vardagar 8–16. Hemtjänsten hjälper dig varje morgon, och Medicinkliniken följer upp din hjärtsvikt."
* subject = Reference(pk-example-patient-tolvan)
* period.start = "2026-09-15"
* period.end = "2027-09-15"
* created = "2026-09-15"
* author = Reference(pk-example-org-vc-norr)
* contributor[0] = Reference(pk-example-org-medicinkliniken)
* contributor[1] = Reference(pk-example-org-hemtjansten-norr)
* careTeam = Reference(pk-example-vardteam-tolvan)
* goal[0] = Reference(pk-example-mal-handla-sjalv)
* goal[1] = Reference(pk-example-mal-hba1c)
* activity[0].reference = Reference(pk-example-aktivitet-besok)
* activity[1].reference = Reference(pk-example-aktivitet-video)
* activity[2].detail.kind = #ServiceRequest
* activity[2].detail.code = PKActivityKind#provtagning "Provtagning"
* activity[2].detail.status = #scheduled
* activity[2].detail.scheduledPeriod.start = "2026-12-01T07:30:00+01:00"
* activity[2].detail.scheduledPeriod.end = "2026-12-01T08:00:00+01:00"
* activity[2].detail.location.display = "Vårdcentralen Norr, provtagningen"
* activity[2].detail.performer[0] = Reference(pk-example-org-vc-norr)
* activity[2].detail.goal[0] = Reference(pk-example-mal-hba1c)
* activity[2].detail.description = "Blodprov (långtidssocker och njurvärden) på morgonen. Kom fastande."
* activity[3].detail.code = PKActivityKind#hemtjanstinsats "Hemtjänstinsats"
* activity[3].detail.status = #in-progress
* activity[3].detail.scheduledTiming.repeat.frequency = 1
* activity[3].detail.scheduledTiming.repeat.period = 1
* activity[3].detail.scheduledTiming.repeat.periodUnit = #d
* activity[3].detail.scheduledTiming.repeat.timeOfDay = "08:00:00"
* activity[3].detail.performer[0] = Reference(pk-example-org-hemtjansten-norr)
* activity[3].detail.goal[0] = Reference(pk-example-mal-handla-sjalv)
* activity[3].detail.description = "Hemtjänsten hjälper dig med frukost och medicinerna varje morgon."
* activity[4].detail.code = PKActivityKind#sip-mote "SIP-möte"
* activity[4].detail.status = #scheduled
* activity[4].detail.scheduledPeriod.start = "2027-01-12T13:00:00+01:00"
* activity[4].detail.scheduledPeriod.end = "2027-01-12T14:00:00+01:00"
* activity[4].detail.location.display = "Hemma hos dig"
* activity[4].detail.performer[0] = Reference(pk-example-org-vc-norr)
* activity[4].detail.performer[1] = Reference(pk-example-org-hemtjansten-norr)
* activity[4].detail.performer[2] = Reference(pk-example-role-anna-vc-norr)
* activity[4].detail.performer[3] = Reference(pk-example-role-karin-hemtjansten)
* activity[4].detail.description = "Möte om din samordnade individuella plan (SIP) med vårdcentralen, hemtjänsten och dig. Din dotter är välkommen."
* activity[5].detail.code = PKActivityKind#uppfoljning "Uppföljning"
* activity[5].detail.status = #not-started
* activity[5].detail.scheduledString = "Under mars 2027; du får en kallelse"
* activity[5].detail.performer[0] = Reference(pk-example-org-medicinkliniken)
* activity[5].detail.description = "Hjärtsviktsmottagningen på Medicinkliniken följer upp din hjärtsvikt."
* activity[6].detail.code = PKActivityKind#egenvard "Egenvård"
* activity[6].detail.status = #in-progress
* activity[6].detail.scheduledTiming.repeat.frequency = 1
* activity[6].detail.scheduledTiming.repeat.period = 1
* activity[6].detail.scheduledTiming.repeat.periodUnit = #d
* activity[6].detail.scheduledTiming.repeat.when = #ACM
* activity[6].detail.performer[0] = Reference(pk-example-org-vc-norr)
* activity[6].detail.description = "Väg dig varje morgon före frukost och skriv upp vikten. Ring Anna om du har gått upp mer än 2 kg på tre dagar. Vårdcentralen följer upp."

// --- Samtycke, spärrar and the SIP -------------------------------------------------------

Instance: pk-example-samtycke-tolvan
InstanceOf: PKSamtycke
Usage: #example
Title: "Tolvans samtycke: kommunen får ta del av regionens uppgifter"
Description: "Tolvan samtycker till att Exempels kommun tar del av de uppgifter som Region Exempel gör tillgängliga, och till sin SIP. Registrerat hos Hemtjänsten Norr."
* status = #active
* scope = $consentscope#patient-privacy "Privacy Consent"
* category[samtycke] = PKConsentCategory#samtycke "Samtycke till sammanhållen journalföring"
* patient = Reference(pk-example-patient-tolvan)
* dateTime = "2026-11-20T10:15:00+01:00"
* performer[0] = Reference(pk-example-patient-tolvan)
* organization[0] = Reference(pk-example-org-hemtjansten-norr)
* policyRule = $v3-ActCode#OPTIN "opt-in"
* provision.type = #permit
* provision.period.start = "2026-11-20"
* provision.actor[0].role = $v3-ParticipationType#IRCP "information recipient"
* provision.actor[0].reference = Reference(pk-example-org-exempels-kommun)
* provision.actor[1].role = $v3-ParticipationType#CST "custodian"
* provision.actor[1].reference = Reference(pk-example-org-region-exempel)

Instance: pk-example-inre-sparr-tolvan
InstanceOf: PKSparr
Usage: #example
Title: "Tolvans inre spärr av Medicinklinikens uppgifter (hävd)"
Description: "Tolvan spärrade Medicinklinikens uppgifter mot Region Exempels andra vårdenheter och hävde spärren den 30 november 2026 (status inactive)."
* status = #inactive
* scope = $consentscope#patient-privacy "Privacy Consent"
* category[sparr] = PKConsentCategory#inre-sparr "Inre spärr"
* patient = Reference(pk-example-patient-tolvan)
* dateTime = "2026-10-01T14:00:00+02:00"
* performer[0] = Reference(pk-example-patient-tolvan)
* organization[0] = Reference(pk-example-org-medicinkliniken)
* policyRule = $v3-ActCode#OPTOUT "opt-out"
* provision.type = #deny
* provision.period.start = "2026-10-01"
* provision.period.end = "2026-11-30"
* provision.actor[0].role = $v3-ParticipationType#CST "custodian"
* provision.actor[0].reference = Reference(pk-example-org-medicinkliniken)

Instance: pk-example-yttre-sparr-tolvan
InstanceOf: PKSparr
Usage: #example
Title: "Tolvans yttre spärr av Medicinklinikens uppgifter"
Description: "Tolvan spärrar Medicinklinikens uppgifter mot andra vårdgivare: kommunen får, trots samtycket, inte ta del av dem."
* status = #active
* scope = $consentscope#patient-privacy "Privacy Consent"
* category[sparr] = PKConsentCategory#yttre-sparr "Yttre spärr"
* patient = Reference(pk-example-patient-tolvan)
* dateTime = "2026-11-22T09:30:00+01:00"
* performer[0] = Reference(pk-example-patient-tolvan)
* organization[0] = Reference(pk-example-org-medicinkliniken)
* policyRule = $v3-ActCode#OPTOUT "opt-out"
* provision.type = #deny
* provision.period.start = "2026-11-22"
* provision.actor[0].role = $v3-ParticipationType#CST "custodian"
* provision.actor[0].reference = Reference(pk-example-org-medicinkliniken)

Instance: pk-example-sip-tolvan
InstanceOf: PKSip
Usage: #example
Title: "Tolvans SIP"
Description: "Samordnad individuell plan för Tolvan från SIP-mötet: hemtjänsten och vårdcentralen gör var sin del, kommunen har det övergripande ansvaret."
* status = #active
* extension[overgripandeAnsvar].valueCodeableConcept = PKHuvudman#kommun "Kommun"
* category[sip] = PKCarePlanCategory#sip "Samordnad individuell plan (SIP)"
* title = "Min SIP"
* description = "Det här har vi kommit överens om på SIP-mötet. Kommunen samordnar; Karin Karlsson på hemtjänsten är din kontaktperson."
* partOf[0] = Reference(pk-example-patientkontrakt-tolvan)
* subject = Reference(pk-example-patient-tolvan)
* period.start = "2027-01-12"
* created = "2027-01-12"
* author = Reference(pk-example-org-hemtjansten-norr)
* contributor[0] = Reference(pk-example-org-vc-norr)
* supportingInfo[samtycke] = Reference(pk-example-samtycke-tolvan)
* activity[0].extension[huvudman].valueCodeableConcept = PKHuvudman#kommun "Kommun"
* activity[0].detail.code = PKActivityKind#hemtjanstinsats "Hemtjänstinsats"
* activity[0].detail.status = #in-progress
* activity[0].detail.performer[0] = Reference(pk-example-org-hemtjansten-norr)
* activity[0].detail.performer[1] = Reference(pk-example-role-karin-hemtjansten)
* activity[0].detail.description = "Hemtjänsten hjälper dig med frukost och medicinerna varje morgon och handlar en gång i veckan."
* activity[1].extension[huvudman].valueCodeableConcept = PKHuvudman#region "Region"
* activity[1].detail.code = PKActivityKind#uppfoljning "Uppföljning"
* activity[1].detail.status = #not-started
* activity[1].detail.performer[0] = Reference(pk-example-org-vc-norr)
* activity[1].detail.performer[1] = Reference(pk-example-role-anna-vc-norr)
* activity[1].detail.description = "Vårdcentralen följer upp din vikt och dina mediciner och säger till hemtjänsten om något ska ändras."
