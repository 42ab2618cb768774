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
Description: "Kategori som markerar en CarePlan som ett Patientkontrakt: den överenskommelse som patient och vård skriver tillsammans (God och nära vård)."
* insert PKCodeSystem
* #patientkontrakt "Patientkontrakt" "Överenskommelse mellan patient och vård om vad som ska hända, när och vem patienten vänder sig till."
* insert English(#patientkontrakt, Patient contract)

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
