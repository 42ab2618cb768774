// Code systems and value sets of the Patientkontrakt. Displays are Swedish (the resources'
// language is sv); every concept carries an English designation.

RuleSet: PKTerminology
* ^version = "0.1.0"
* ^status = #draft
* ^experimental = false
* ^publisher = "Patientkontrakt"
* ^language = #sv

RuleSet: PKCodeSystem
* insert PKTerminology
* ^caseSensitive = true
* ^content = #complete

RuleSet: English(code, text)
* {code} ^designation[+].language = #en
* {code} ^designation[=].value = "{text}"

// ---------------------------------------------------------------------------------------
CodeSystem: PKCarePlanCategory
Id: pk-careplan-category
Title: "Patientkontrakt: vårdplanskategori"
Description: "Kategori som markerar vad en CarePlan är: ett Patientkontrakt, den överenskommelse som patient och vård skriver tillsammans (God och nära vård), eller en samordnad individuell plan (SIP) som hör till ett Patientkontrakt."
* insert PKCodeSystem
* #patientkontrakt "Patientkontrakt" "Överenskommelse mellan patient och vård om vad som ska hända, när och vem patienten vänder sig till."
* insert English(#patientkontrakt, Patient contract)
* #sip "Samordnad individuell plan (SIP)" "Samordnad individuell plan enligt HSL (2017:30) 16 kap 4 § och SoL 2 kap 7 §: region och kommun planerar tillsammans med den enskilde vem som gör vad och vem som har det övergripande ansvaret."
* insert English(#sip, Coordinated individual plan)

ValueSet: PKCarePlanCategoryVS
Id: pk-careplan-category
Title: "Patientkontrakt: vårdplanskategori"
Description: "Alla koder i kodverket pk-careplan-category."
* insert PKTerminology
* include codes from system PKCarePlanCategory

// ---------------------------------------------------------------------------------------
CodeSystem: PKCareTeamRole
Id: pk-careteam-role
Title: "Patientkontrakt: roll i vårdteamet"
Description: "Roller som deltagarna i ett Patientkontrakts vårdteam har."
* insert PKCodeSystem
* #fast-vardkontakt "Fast vårdkontakt" "Fast vårdkontakt enligt patientlagen (2014:821) 6 kap 2 §: samordnar och är patientens väg in."
* insert English(#fast-vardkontakt, Named care contact)
* #fast-lakarkontakt "Fast läkarkontakt" "Fast läkarkontakt i primärvården enligt HSL (2017:30) 7 kap 3 §."
* insert English(#fast-lakarkontakt, Named physician)
* #patient "Patient" "Patienten själv, som part i överenskommelsen."
* insert English(#patient, Patient)
* #narstaende "Närstående" "Närstående som patienten vill ska delta."
* insert English(#narstaende, Next of kin)
* #kontaktperson-kommun "Kontaktperson i kommunen" "Kommunens kontaktperson för patientens insatser (hemtjänst, hemsjukvård, SIP)."
* insert English(#kontaktperson-kommun, Municipal contact person)
* #ovrig "Övrig" "Annan deltagare i vårdteamet."
* insert English(#ovrig, Other)

ValueSet: PKCareTeamRoleVS
Id: pk-careteam-role
Title: "Patientkontrakt: roll i vårdteamet"
Description: "Alla koder i kodverket pk-careteam-role."
* insert PKTerminology
* include codes from system PKCareTeamRole

// ---------------------------------------------------------------------------------------
CodeSystem: PKOrganizationKind
Id: pk-organization-kind
Title: "Patientkontrakt: organisationens huvudman"
Description: "Vilken sorts huvudman en organisation i ett Patientkontrakt hör till."
* insert PKCodeSystem
* #region "Region" "Region (hälso- och sjukvård i regional regi)."
* insert English(#region, Region)
* #kommun "Kommun" "Kommun (socialtjänst, hemtjänst, kommunal hälso- och sjukvård)."
* insert English(#kommun, Municipality)
* #privat-vardgivare "Privat vårdgivare" "Privat vårdgivare, med eller utan avtal med regionen."
* insert English(#privat-vardgivare, Private care provider)

ValueSet: PKOrganizationKindVS
Id: pk-organization-kind
Title: "Patientkontrakt: organisationens huvudman"
Description: "Alla koder i kodverket pk-organization-kind."
* insert PKTerminology
* include codes from system PKOrganizationKind

// ---------------------------------------------------------------------------------------
CodeSystem: PKCareUnitType
Id: pk-care-unit-type
Title: "Patientkontrakt: typ av enhet"
Description: "Typ av vård- eller omsorgsenhet som deltar i ett Patientkontrakt."
* insert PKCodeSystem
* #vardcentral "Vårdcentral" "Vårdcentral / hälsocentral i primärvården."
* insert English(#vardcentral, Primary care centre)
* #sjukhusklinik "Sjukhusklinik" "Klinik eller mottagning på sjukhus."
* insert English(#sjukhusklinik, Hospital clinic)
* #hemsjukvard "Hemsjukvård" "Hälso- och sjukvård i patientens hem."
* insert English(#hemsjukvard, Home health care)
* #hemtjanst "Hemtjänst" "Kommunens hemtjänst."
* insert English(#hemtjanst, Home help service)
* #annan "Annan" "Annan sorts enhet."
* insert English(#annan, Other)

ValueSet: PKCareUnitTypeVS
Id: pk-care-unit-type
Title: "Patientkontrakt: typ av enhet"
Description: "Alla koder i kodverket pk-care-unit-type."
* insert PKTerminology
* include codes from system PKCareUnitType

// ---------------------------------------------------------------------------------------
CodeSystem: PKActivityKind
Id: pk-activity-kind
Title: "Patientkontrakt: typ av aktivitet"
Description: "Typ av planerad aktivitet i ett Patientkontrakt: vårdens och patientens egna."
* insert PKCodeSystem
* #besok "Besök" "Besök på mottagning."
* insert English(#besok, Visit)
* #hembesok "Hembesök" "Besök i patientens hem."
* insert English(#hembesok, Home visit)
* #videobesok "Videobesök" "Digitalt besök med video."
* insert English(#videobesok, Video visit)
* #telefonkontakt "Telefonkontakt" "Planerad kontakt per telefon."
* insert English(#telefonkontakt, Phone contact)
* #provtagning "Provtagning" "Provtagning, till exempel blodprov."
* insert English(#provtagning, Sample taking)
* #behandling "Behandling" "Behandling eller åtgärd."
* insert English(#behandling, Treatment)
* #rehabilitering "Rehabilitering" "Rehabiliterande insats."
* insert English(#rehabilitering, Rehabilitation)
* #hemtjanstinsats "Hemtjänstinsats" "Insats från kommunens hemtjänst."
* insert English(#hemtjanstinsats, Home help)
* #sip-mote "SIP-möte" "Möte för samordnad individuell plan (HSL 16 kap 4 §)."
* insert English(#sip-mote, Coordinated individual plan meeting)
* #uppfoljning "Uppföljning" "Uppföljning av planen eller av en behandling."
* insert English(#uppfoljning, Follow-up)
* #egenvard "Egenvård" "Det patienten själv gör."
* insert English(#egenvard, Self-care)

ValueSet: PKActivityKindVS
Id: pk-activity-kind
Title: "Patientkontrakt: typ av aktivitet"
Description: "Alla koder i kodverket pk-activity-kind."
* insert PKTerminology
* include codes from system PKActivityKind

// ---------------------------------------------------------------------------------------
CodeSystem: PKConsentCategory
Id: pk-consent-category
Title: "Patientkontrakt: samtycke och spärr"
Description: "Vad en Consent är: patientens samtycke till att en vårdgivare tar del av andra vårdgivares uppgifter, eller en spärr inom eller mellan vårdgivare (patientdatalagen 2008:355, 4 och 6 kap)."
* insert PKCodeSystem
* #samtycke "Samtycke till sammanhållen journalföring" "Patientens samtycke till att en vårdenhet eller vårdgivare tar del av uppgifter som andra vårdgivare gör tillgängliga (patientdatalagen 6 kap 3 §)."
* insert English(#samtycke, Consent to shared health records)
* #inre-sparr "Inre spärr" "Patienten motsätter sig att uppgifter hos en vårdenhet görs tillgängliga för vårdgivarens andra vårdenheter (patientdatalagen 4 kap 4 §)."
* insert English(#inre-sparr, Internal block)
* #yttre-sparr "Yttre spärr" "Patienten motsätter sig att uppgifter hos en vårdenhet eller vårdgivare görs tillgängliga för andra vårdgivare (patientdatalagen 6 kap 2 §)."
* insert English(#yttre-sparr, External block)

ValueSet: PKConsentCategoryVS
Id: pk-consent-category
Title: "Patientkontrakt: samtycke och spärr"
Description: "Alla koder i kodverket pk-consent-category."
* insert PKTerminology
* include codes from system PKConsentCategory

ValueSet: PKSparrCategoryVS
Id: pk-sparr-category
Title: "Patientkontrakt: spärr"
Description: "Spärrarna i kodverket pk-consent-category: inre spärr och yttre spärr."
* insert PKTerminology
* PKConsentCategory#inre-sparr "Inre spärr"
* PKConsentCategory#yttre-sparr "Yttre spärr"

ValueSet: PKConsentActorRoleVS
Id: pk-consent-actor-role
Title: "Patientkontrakt: roll i samtycke och spärr"
Description: "Vilken roll en organisation har i ett samtycke eller en spärr (HL7 v3 ParticipationType): mottagare (IRCP), den vårdenhet eller vårdgivare som får ta del av uppgifterna, eller informationsägare (CST), den vårdenhet eller vårdgivare vars uppgifter samtycket eller spärren gäller."
* insert PKTerminology
* $v3-ParticipationType#IRCP "information recipient"
* $v3-ParticipationType#CST "custodian"

// ---------------------------------------------------------------------------------------
CodeSystem: PKHuvudman
Id: pk-huvudman
Title: "Patientkontrakt: huvudman i en SIP"
Description: "Vilken huvudman som ansvarar för en insats i en samordnad individuell plan (SIP), och vem som har det övergripande ansvaret för planen."
* insert PKCodeSystem
* #region "Region" "Regionen (hälso- och sjukvård i regional regi, även privata vårdgivare på regionens uppdrag)."
* insert English(#region, Region)
* #kommun "Kommun" "Kommunen (socialtjänst, hemtjänst, kommunal hälso- och sjukvård)."
* insert English(#kommun, Municipality)
* #annan "Annan" "Annan aktör, till exempel Försäkringskassan, Arbetsförmedlingen eller skolan."
* insert English(#annan, Other)

ValueSet: PKHuvudmanVS
Id: pk-huvudman
Title: "Patientkontrakt: huvudman i en SIP"
Description: "Alla koder i kodverket pk-huvudman."
* insert PKTerminology
* include codes from system PKHuvudman

ValueSet: PKOvergripandeAnsvarVS
Id: pk-overgripande-ansvar
Title: "Patientkontrakt: övergripande ansvar för en SIP"
Description: "Huvudmän som kan ha det övergripande ansvaret för en SIP: region eller kommun (HSL 16 kap 4 §, SoL 2 kap 7 §)."
* insert PKTerminology
* PKHuvudman#region "Region"
* PKHuvudman#kommun "Kommun"

// ---------------------------------------------------------------------------------------
CodeSystem: PKStaffRole
Id: pk-staff-role
Title: "Patientkontrakt: uppgift i medarbetaruppdraget"
Description: "Uppgifter som ett medarbetaruppdrag (PractitionerRole.code) kan ge utöver vården: logggranskaren granskar åtkomstloggen för vårdgivarens alla enheter."
* insert PKCodeSystem
* #logggranskare "Logggranskare" "Granskar vårdgivarens åtkomstlogg systematiskt och återkommande: nödåtkomster först, sedan all åtkomst (PDL 4 kap. 3 §, HSLF-FS 2016:40 4 kap. 9 §)."
* insert English(#logggranskare, Log reviewer)

ValueSet: PKStaffRoleVS
Id: pk-staff-role
Title: "Patientkontrakt: uppgift i medarbetaruppdraget"
Description: "Alla koder i kodverket pk-staff-role."
* insert PKTerminology
* include codes from system PKStaffRole
