"""Swedish for the message ids of the forms, the staff list, the print view and the patient's
explanations (statuses, "Vem har läst"): merged into ``tools/sv_messages.SV``."""

from __future__ import annotations

SV_FORMS: dict[str | tuple[str, str], str | tuple[str, str]] = {
    # the personnummer, the contacts and the activities of the create and edit forms
    "Enter the patient's personnummer": "Skriv patientens personnummer",
    "A personnummer has 10 or 12 digits, for example 19121212-1212":
        "Personnumret ska ha 10 eller 12 siffror, t.ex. 19121212-1212",
    "The last digit of the personnummer (the check digit) does not match. Check the number":
        "Kontrollsiffran (personnumrets sista siffra) stämmer inte. Kontrollera numret",
    "The personnummer does not contain a real date. Check the number":
        "Personnumret innehåller inget giltigt datum. Kontrollera numret",
    "The birth date in the personnummer is in the future. Check the number":
        "Födelsedatumet i personnumret ligger i framtiden. Kontrollera numret",
    "The patient already has an active agreement with the unit. Open it from the list, or save this one as a draft.":
        "Patienten har redan ett gällande patientkontrakt hos enheten. Öppna det i listan, eller spara det här "
        "som utkast.",
    "Choose a fast vårdkontakt": "Välj en fast vårdkontakt",
    "Choose a fast läkarkontakt": "Välj en fast läkarkontakt",
    "Choose the kind of activity.": "Välj vilken sorts aktivitet det är.",
    "Enter the date of the activity.": "Skriv datumet för aktiviteten.",
    "Enter the date as YYYY-MM-DD.": "Skriv datumet som ÅÅÅÅ-MM-DD.",
    "The date has already passed – save anyway? Then tick the box.":
        "Datumet har redan passerat — spara ändå? Kryssa i så fall i rutan.",
    "Enter the time as HH:MM, or leave it empty.": "Skriv tiden som TT:MM, eller lämna fältet tomt.",
    "Time (optional)": "Tid (frivilligt)",
    "Save anyway: the date has passed": "Spara ändå, fast datumet har passerat",
    # the staff list's search
    "For example 19121212-1212, 121212-1212 or a name": "Till exempel 19121212-1212, 121212-1212 eller ett namn",
    "No one has %(typed)s, which is someone under 100. Showing %(number)s instead: someone of 100 or more is "
    "written %(short)s.":
        "Ingen har %(typed)s, som är en person under 100 år. Visar %(number)s i stället: den som är 100 år "
        "eller äldre skrivs %(short)s.",
    # roles in plain words
    "Named care contact": "Fast vårdkontakt", "Named physician": "Fast läkarkontakt",
    "Municipal contact person": "Kontaktperson i kommunen", "Next of kin": "Närstående",
    "Participant": "Deltagare",
    # what each status means for the patient
    "The agreement is still being written. It does not apply yet.":
        "Patientkontraktet skrivs fortfarande. Det gäller inte ännu.",
    "This is what you and your care have agreed, and it applies now.":
        "Det här har du och vården kommit överens om, och det gäller nu.",
    "The agreement does not apply for the moment, for example while you are in hospital. It can apply again later.":
        "Patientkontraktet gäller inte just nu, till exempel medan du ligger på sjukhus. Det kan börja gälla "
        "igen senare.",
    "What you agreed has been done. The agreement no longer applies.":
        "Det ni kom överens om är gjort. Patientkontraktet gäller inte längre.",
    "The agreement was ended before everything in it was done. It no longer applies.":
        "Patientkontraktet avslutades innan allt i det var gjort. Det gäller inte längre.",
    "The agreement was written by mistake and does not apply.":
        "Patientkontraktet skrevs av misstag och gäller inte.",
    "The care has not said whether the agreement applies. Ask your fast vårdkontakt.":
        "Vården har inte angett om patientkontraktet gäller. Fråga din fasta vårdkontakt.",
    # "Vem har läst": what someone did, in the patient's words
    "read your agreement": "läste ditt patientkontrakt",
    "read an earlier version of your agreement": "läste en tidigare version av ditt patientkontrakt",
    "found your agreement in a list when searching": "sökte fram ditt patientkontrakt i en lista",
    "read the history of changes to your agreement": "läste historiken över ändringar i ditt patientkontrakt",
    "opened your whole agreement": "öppnade hela ditt patientkontrakt",
    "wrote new information in your agreement": "skrev in nya uppgifter i ditt patientkontrakt",
    "changed your agreement": "ändrade i ditt patientkontrakt",
    "removed information from your agreement": "tog bort uppgifter ur ditt patientkontrakt",
    "tried to read your agreement but was not allowed to": "försökte läsa ditt patientkontrakt men fick inte",
    "What do the words mean?": "Vad betyder orden?",
    "Someone searched, for example for your personnummer or your name, and your agreement was among what the "
    "search found. They did not necessarily open it.":
        "Någon sökte, till exempel på ditt personnummer eller ditt namn, och ditt patientkontrakt fanns bland "
        "träffarna. Det betyder inte att de öppnade det.",
    "Someone opened your agreement and could see what is in it.":
        "Någon öppnade ditt patientkontrakt och kunde se vad som står i det.",
    "Someone saved a change: for example a new activity, a new goal or a new fast vårdkontakt.":
        "Någon sparade en ändring, till exempel en ny aktivitet, ett nytt mål eller en ny fast vårdkontakt.",
    "Someone tried to reach your information without being allowed to. Nothing was shown to them.":
        "Någon försökte komma åt dina uppgifter utan att ha rätt till det. Inget visades för dem.",
    "Only staff who take part in your care may read your agreement. If something looks wrong, contact your "
    "care unit.":
        "Bara personal som deltar i din vård får läsa ditt patientkontrakt. Om något ser fel ut, kontakta din "
        "vårdenhet.",
    # the print view
    "Print": "Skriv ut", "Name": "Namn", "Printed": "Utskrivet", "Period": "Gäller",
    "%(start)s to %(end)s": "%(start)s till %(end)s",
    "From %(date)s, until further notice": "Från %(date)s, tills vidare", "Not set": "Inte angivet",
}
