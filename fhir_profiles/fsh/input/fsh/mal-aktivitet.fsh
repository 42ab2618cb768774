// Goals (Goal) and booked times (Appointment).

Profile: PKMal
Parent: Goal
Id: pk-mal
Title: "Patientkontrakt: Mål"
Description: "Ett mål i Patientkontraktet. Patientens egna mål (vad som är viktigt för mig) har expressedBy = patienten; professionens mål har expressedBy = medarbetaruppdraget."
* insert PKConformance
* subject 1..1
* subject only Reference(PKPatient)
* description 1..1
* description ^short = "Målet i klartext"
* expressedBy 1..1
* expressedBy only Reference(PKPatient or PKPractitionerRole)
* expressedBy ^short = "Vem som uttryckt målet: patienten eller ett medarbetaruppdrag"
* target.due[x] only date
* target.due[x] ^short = "När målet ska vara nått"


Profile: PKAktivitet
Parent: Appointment
Id: pk-aktivitet
Title: "Patientkontrakt: Bokad aktivitet"
Description: "En bokad tid i Patientkontraktet (besök, hembesök, videobesök, ...), med patienten och minst ett medarbetaruppdrag som deltagare."
* insert PKConformance
* obeys pk-aktivitet-1
* serviceType from PKActivityKindVS (extensible)
* serviceType ^short = "Typ av aktivitet"
* description 1..1
* description ^short = "Vad som ska hända, i klartext för patienten"
* start ^short = "Starttid"
* end ^short = "Sluttid"
* participant ^slicing.discriminator.type = #type
* participant ^slicing.discriminator.path = "actor.resolve()"
* participant ^slicing.rules = #open
* participant ^slicing.description = "Deltagare skiljs åt genom vilken sorts resurs actor är."
* participant contains
    patient 1..1 and
    performer 1..*
* participant[patient] ^short = "Patienten"
* participant[patient].actor 1..1
* participant[patient].actor only Reference(PKPatient)
* participant[performer] ^short = "Medarbetaruppdrag som utför aktiviteten"
* participant[performer].actor 1..1
* participant[performer].actor only Reference(PKPractitionerRole)

Invariant: pk-aktivitet-1
Description: "Sluttiden ligger inte före starttiden."
Severity: #error
Expression: "(start.exists() and end.exists()) implies end >= start"
