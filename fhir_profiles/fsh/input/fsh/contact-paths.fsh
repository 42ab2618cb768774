// Contact paths: when a care unit's phone answers and when its address is open.
// R4 keeps hours only on HealthcareService, Location and PractitionerRole (availableTime); a
// unit here is an Organization, so its ContactPoint and Address carry this extension, shaped
// like availableTime (docs/patientkontrakt.md, "Kontaktvägar").

Extension: PKAvailableTime
Id: pk-available-time
Title: "Patientkontrakt: Tider"
Description: "När en telefon svarar (på en ContactPoint: telefontid) eller när en adress har öppet (på en Address: öppettider). Samma form som R4:s PractitionerRole.availableTime och HealthcareService.availableTime: veckodagar och klockslag, eller hela dygnet. Upprepas för olika tider olika dagar."
* insert PKConformance
* ^context[0].type = #element
* ^context[0].expression = "ContactPoint"
* ^context[1].type = #element
* ^context[1].expression = "Address"
* extension contains
    daysOfWeek 1..* and
    allDay 0..1 and
    availableStartTime 0..1 and
    availableEndTime 0..1
* extension[daysOfWeek] ^short = "Veckodag: mon, tue, wed, thu, fri, sat, sun"
* extension[daysOfWeek].value[x] only code
* extension[daysOfWeek].value[x] from http://hl7.org/fhir/ValueSet/days-of-week (required)
* extension[allDay] ^short = "Hela dygnet"
* extension[allDay].value[x] only boolean
* extension[availableStartTime] ^short = "Från klockan"
* extension[availableStartTime].value[x] only time
* extension[availableEndTime] ^short = "Till klockan"
* extension[availableEndTime].value[x] only time
