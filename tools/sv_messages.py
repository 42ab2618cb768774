"""Swedish translations of the pages' message ids: ``python -m tools.sv_messages`` (run by
``make messages``) extracts the ids from the templates and page modules, fills in these and
writes ``api/locale/sv/LC_MESSAGES/messages.po``. An id without a translation here stops it,
naming the id: every string people read is in the catalogue.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

from tools.sv_forms import SV_FORMS
from tools.sv_plan_messages import PLAN

ROOT = Path(__file__).resolve().parents[1]
PO = ROOT / "api" / "locale" / "sv" / "LC_MESSAGES" / "messages.po"
POT = ROOT / "build" / "messages.pot"

SV: dict[str | tuple[str, str], str | tuple[str, str]] = {**SV_FORMS,
    "Draft": "Utkast", "Active": "Gällande", "On hold": "Vilande", "Completed": "Avslutat",
    "Ended early": "Avbrutet", "Entered in error": "Felregistrerat", "Unknown": "Okänd",
    "Proposed": "Föreslaget", "Planned": "Planerat", "Accepted": "Godkänt", "Ongoing": "Pågår",
    "Achieved": "Uppnått", "Cancelled": "Avbrutet", "Rejected": "Avböjt",
    "Last changed": "Senast ändrat", "Start date": "Startdatum", "Status": "Status",
    "read": "läste", "read an earlier version": "läste en tidigare version", "searched": "sökte",
    "read the history": "läste historiken", "read the agreement": "läste patientkontraktet",
    "created": "skapade", "changed": "ändrade", "removed": "tog bort",
    "Title": "Rubrik", "The plan in plain language": "Planen i klartext", "End date": "Slutdatum",
    "Patientkontrakt": "Patientkontrakt", "Skip to content": "Hoppa till innehållet", "Language": "Språk",
    "Patientkontrakt – the agreement between you and your care.":
        "Patientkontrakt – överenskommelsen mellan dig och vården.",
    "My Patientkontrakt": "Mitt patientkontrakt", "Saved.": "Sparat.",
    "Printable version": "Utskriftsvänlig version",
    "You have no Patientkontrakt right now": "Du har inget patientkontrakt just nu",
    "A Patientkontrakt is written together with your care unit when you need care from several places, "
    "for example the vårdcentral, the hospital and the kommun's home care.":
        "Ett patientkontrakt skriver du tillsammans med din vårdenhet när du behöver vård från flera håll, "
        "till exempel vårdcentralen, sjukhuset och kommunens hemtjänst.",
    "If you want one, ask your vårdcentral. You can also ask for a fast vårdkontakt: someone who helps "
    "you coordinate your care.":
        "Vill du ha ett, fråga din vårdcentral. Du kan också be om en fast vårdkontakt: någon som hjälper dig "
        "att samordna din vård.",
    "Your agreement with %(unit)s": "Din överenskommelse med %(unit)s", "Since %(date)s": "Sedan %(date)s",
    "Until %(date)s": "Till och med %(date)s", "Your contacts": "Dina kontakter", "The plan": "Planen",
    "What is planned": "Det här är planerat", "Earlier (%(num)d)": "Tidigare (%(num)d)",
    "The care's goals": "Vårdens mål", "This is important to me": "Det här är viktigt för mig",
    "by %(date)s": "till %(date)s", "Change": "Ändra",
    "You have not written anything yet.": "Du har inte skrivit något ännu.",
    "Add what is important to you": "Skriv vad som är viktigt för dig", "By when (optional)": "Till när (frivilligt)",
    "Add": "Lägg till", "Who has read my Patientkontrakt": "Vem har läst mitt patientkontrakt",
    "Every time someone in the care reads or changes your information, it is logged. You can see it here.":
        "Varje gång någon i vården läser eller ändrar dina uppgifter loggas det. Här kan du se det.",
    "When": "När", "Care unit": "Vårdenhet", "Who": "Vem", "What": "Vad", "tried, not allowed": "försökte, fick inte",
    "No one has read your information yet.": "Ingen har läst dina uppgifter ännu.",
    "Change goal": "Ändra mål", "Breadcrumb": "Du är här",
    "Change what is important to you": "Ändra det som är viktigt för dig",
    "This goal was written by the care. You can only change goals you wrote yourself.":
        "Det här målet har vården skrivit. Du kan bara ändra mål som du själv har skrivit.",
    "What is important to you": "Det som är viktigt för dig", "I have reached this goal": "Jag har nått målet",
    "Save": "Spara", "Cancel": "Avbryt",
    "Your Patientkontrakt is the agreement between you and your care: who your fast vårdkontakt is, what "
    "matters to you, and what is planned for you and when, in the region and the kommun.":
        "Ditt patientkontrakt är överenskommelsen mellan dig och vården: vem som är din fasta vårdkontakt, vad "
        "som är viktigt för dig och vad som är planerat för dig och när, i regionen och i kommunen.",
    "Sign in": "Logga in", "You sign in with your e-identification (BankID or Freja+).":
        "Du loggar in med din e-legitimation (BankID eller Freja+).",
    "Back": "Tillbaka", "Use your browser's print command to print this page.":
        "Använd webbläsarens utskriftskommando för att skriva ut sidan.",
    "Choose commission": "Välj uppdrag", "Choose the commission to act for": "Välj vilket uppdrag du arbetar i",
    "You have several commissions. The care unit of the one you choose decides what you can see.":
        "Du har flera medarbetaruppdrag. Vårdenheten i det uppdrag du väljer avgör vad du kan se.",
    "Staff": "Personal", "Sign-in failed": "Inloggningen misslyckades", "Test sign-in": "Testinloggning",
    "TEST SIGN-IN – demo data only.": "TESTINLOGGNING – endast testdata.",
    "This page stands in for SITHS (staff) and BankID/Freja (patients). Anyone can sign in as anyone here; "
    "it must never be enabled with real patient data.":
        "Sidan ersätter SITHS (personal) och BankID/Freja (patienter). Här kan vem som helst logga in som vem som "
        "helst; den får aldrig vara påslagen med riktiga patientuppgifter.",
    "Sign in to %(client)s": "Logga in i %(client)s",
    "Staff: choose a commission (care unit to act for)": "Personal: välj uppdrag (vårdenheten du arbetar för)",
    "HSA-id": "HSA-id",
    "No staff in the directory yet: load the demo region with `patientkontrakt demo`.":
        "Det finns ingen personal i katalogen ännu: läs in demoregionen med `patientkontrakt demo`.",
    "Patients: choose who you are": "Patienter: välj vem du är", "Phone": "Telefon",
    "Or give a personnummer": "Eller ange ett personnummer", "Sign in as this patient": "Logga in som patienten",
    "No patients in the directory yet: load the demo region with `patientkontrakt demo`.":
        "Det finns inga patienter i katalogen ännu: läs in demoregionen med `patientkontrakt demo`.",
    "Patients too (%(client)s asks for staff access)": "Även patienter (%(client)s ber om behörighet för personal)",
    "Staff too (%(client)s asks for a patient's access)": "Även personal (%(client)s ber om behörighet för en patient)",
    "These pages are for staff": "De här sidorna är för personal",
    "This e-service is for patients": "E-tjänsten är för patienter",
    "You signed in as a patient. The staff pages are for people working in the care, signed in with their staff "
    "identity.":
        "Du loggade in som patient. Personalsidorna är för dig som arbetar i vården och loggar in med din "
        "tjänstelegitimation.",
    "You signed in as staff. Here patients see their own Patientkontrakt, signed in with their own "
    "e-identification.":
        "Du loggade in som personal. Här ser patienter sitt eget patientkontrakt och loggar in med sin egen "
        "e-legitimation.",
    "Go to My Patientkontrakt": "Gå till Mitt patientkontrakt", "Go to the staff pages": "Gå till personalsidorna",
    "Sign in again as staff": "Logga in igen som personal",
    "Sign in again as a patient": "Logga in igen som patient",
    "The sign-in was cancelled.": "Inloggningen avbröts.",
    "The sign-in took too long, or was started in another window.":
        "Inloggningen tog för lång tid eller startades i ett annat fönster.",
    "The sign-in could not be completed.": "Inloggningen gick inte att slutföra.",
    "No contacts are named yet.": "Inga kontakter är utsedda ännu.", "Earlier contacts": "Tidigare kontakter",
    "None yet.": "Inga ännu.", "Recurring": "Återkommande", "Time not set": "Tid ej bestämd",
    "Nothing planned.": "Inget planerat.", "Something went wrong": "Något gick fel", "Not found": "Finns inte",
    "Not allowed": "Inte tillåtet",
    "The form had expired. Go back, reload the page and try again.":
        "Formuläret hade gått ut. Gå tillbaka, ladda om sidan och försök igen.",
    "It does not exist, or you are not allowed to see it.": "Det finns inte, eller så får du inte se det.",
    "You are not allowed to do that.": "Du får inte göra det.", "Back to the start page": "Tillbaka till startsidan",
    "Temporarily unavailable": "Tillfälligt otillgänglig",
    "The service cannot reach its database right now. Please try again in a little while.":
        "Tjänsten når inte sin databas just nu. Försök igen om en liten stund.",
    "What you were saving may or may not have been saved. Check before you save it again.":
        "Det du sparade kan ha sparats, eller inte. Kontrollera innan du sparar igen.",
    "Try again": "Försök igen",
    "Patientkontrakt – staff": "Patientkontrakt – personal", "Sign out": "Logga ut", "Error:": "Fel:",
    "Please correct the following": "Rätta följande",
    "These pages are for staff. Sign in with your staff identity.":
        "De här sidorna är för personal. Logga in med din tjänstelegitimation.",
    "This e-service is for patients. Sign in with your own e-identification.":
        "E-tjänsten är för patienter. Logga in med din egen e-legitimation.",
    "Try again": "Försök igen", "The unit's agreements": "Enhetens patientkontrakt", "Responsible": "Ansvarig",
    "From %(date)s": "Från %(date)s", "to %(date)s": "till %(date)s", "Taking part": "Deltar",
    "Edit agreement": "Redigera patientkontraktet", "Change fast vårdkontakt": "Byt fast vårdkontakt",
    "Contacts": "Kontakter", "What matters to the patient": "Det här är viktigt för patienten",
    "Planned activities": "Planerade aktiviteter", "Earlier activities (%(num)d)": "Tidigare aktiviteter (%(num)d)",
    "Changes of fast vårdkontakt": "Byten av fast vårdkontakt", "Close the agreement": "Avsluta patientkontraktet",
    "Why is it closed?": "Varför avslutas det?", "It is fulfilled": "Det är genomfört",
    "It ends early": "Det avbryts i förtid", "Now:": "Nu:", "none": "ingen",
    "The current contact is kept in the agreement's history with an end date.":
        "Den nuvarande kontakten finns kvar i patientkontraktets historik med ett slutdatum.",
    "New fast vårdkontakt": "Ny fast vårdkontakt", "Choose": "Välj", "Why": "Varför",
    "Someone else changed the agreement while you were editing":
        "Någon annan ändrade patientkontraktet medan du redigerade",
    "Changed by %(name)s (%(role)s, %(unit)s) at %(when)s.": "Ändrat av %(name)s (%(role)s, %(unit)s) %(when)s.",
    "What they changed:": "Det här ändrades:", "Field": "Fält", "Before": "Före", "Now": "Nu",
    "Your changes have not been saved. They are still in the form below: check them against the new version "
    "and save again.":
        "Dina ändringar har inte sparats. De finns kvar i formuläret nedan: jämför med den nya versionen och "
        "spara igen.",
    "End date (optional)": "Slutdatum (frivilligt)", "Patientkontrakt for staff": "Patientkontrakt för personal",
    "Here you create and keep your care unit's patient agreements up to date: the fast vårdkontakt and fast "
    "läkarkontakt, the goals and the planned activities across region and kommun.":
        "Här skapar och uppdaterar du vårdenhetens patientkontrakt: fast vårdkontakt och fast läkarkontakt, "
        "målen och de planerade aktiviteterna i region och kommun.",
    "You sign in with your staff identity and choose the commission (care unit) you act for. Everything you "
    "read and change is logged.":
        "Du loggar in med din tjänstelegitimation och väljer det uppdrag (den vårdenhet) du arbetar för. Allt du "
        "läser och ändrar loggas.",
    "New agreement": "Nytt patientkontrakt", "Find agreements": "Sök patientkontrakt",
    "Personnummer or name": "Personnummer eller namn", "All": "Alla", "Sort by": "Sortera efter", "Search": "Sök",
    ("%(num)d agreement", "%(num)d agreements"): ("%(num)d patientkontrakt", "%(num)d patientkontrakt"),
    "Patient": "Patient", "Personnummer": "Personnummer", "Pages": "Sidor", "Previous page": "Föregående sida",
    "Page %(page)d of %(pages)d": "Sida %(page)d av %(pages)d", "Next page": "Nästa sida",
    "No agreements found.": "Inga patientkontrakt hittades.", "The patient": "Patienten",
    "Personnummer or samordningsnummer": "Personnummer eller samordningsnummer",
    "YYYYMMDD-NNNN. If the patient is not registered at the unit, fill in the name too.":
        "ÅÅÅÅMMDD-NNNN. Om patienten inte är registrerad på enheten, fyll också i namnet.",
    "First name": "Förnamn", "Last name": "Efternamn", "Phone (optional)": "Telefon (frivilligt)",
    "Fast vårdkontakt": "Fast vårdkontakt", "Fast läkarkontakt": "Fast läkarkontakt", "(optional)": "(frivilligt)",
    "Others taking part, from region, hospital and kommun": "Andra som deltar, från region, sjukhus och kommun",
    "Hold Ctrl (or Cmd) to choose several.": "Håll ned Ctrl (eller Cmd) för att välja flera.",
    "What will happen, when, and whom the patient turns to. The patient reads this.":
        "Vad som ska hända, när, och vem patienten vänder sig till. Patienten läser det här.",
    "What matters to the patient (one goal per line)": "Det här är viktigt för patienten (ett mål per rad)",
    "The care's goals (one per line)": "Vårdens mål (ett per rad)", "Activity %(num)d": "Aktivitet %(num)d",
    "Kind": "Typ", "Date": "Datum", "Time": "Tid", "Responsible unit": "Ansvarig enhet",
    "Create the agreement": "Skapa patientkontraktet", "Place (optional)": "Plats (frivilligt)",
    "New goals of the care (one per line)": "Nya mål för vården (ett per rad)",
    "New goals the patient states (one per line)": "Nya mål som patienten uttrycker (ett per rad)",
    "Plan new activities": "Planera nya aktiviteter",
    ("(once)", "(%(num)d times)"): ("(en gång)", "(%(num)d gånger)"),
    "Enter the last name of a new patient.": "Ange efternamn för en ny patient.",
    "Enter the first name of a new patient.": "Ange förnamn för en ny patient.",
    "Choose the fast vårdkontakt among the unit's staff.": "Välj fast vårdkontakt bland enhetens medarbetare.",
    "At a vårdcentral the patient has a fast läkarkontakt who is a physician.":
        "På en vårdcentral ska patienten ha en fast läkarkontakt som är läkare.",
    "Choose the fast läkarkontakt among the unit's physicians.": "Välj fast läkarkontakt bland enhetens läkare.",
    "Choose participants from the list.": "Välj deltagare ur listan.", "Describe the activity.": "Beskriv aktiviteten.",
    "Choose the unit responsible for the activity.": "Välj vilken enhet som ansvarar för aktiviteten.",
    "Enter a date (YYYY-MM-DD) and a time (HH:MM).": "Ange datum (ÅÅÅÅ-MM-DD) och tid (TT:MM).",
    "Enter a title.": "Ange en rubrik.", "Choose a status.": "Välj status.",
    "Enter the end date as YYYY-MM-DD.": "Ange slutdatum som ÅÅÅÅ-MM-DD.",
    "Choose the new fast vårdkontakt among the unit's staff.":
        "Välj den nya fasta vårdkontakten bland enhetens medarbetare.",
    "That is already the patient's fast vårdkontakt.": "Det är redan patientens fasta vårdkontakt.",
    "Say why the fast vårdkontakt changes.": "Ange varför den fasta vårdkontakten byts.",
    "Someone else changed the care team since you opened the page. Reload it and try again.":
        "Någon annan har ändrat vårdteamet sedan du öppnade sidan. Ladda om och försök igen.",
    "Write what is important to you.": "Skriv vad som är viktigt för dig.",
    "Write at most 500 characters.": "Skriv högst 500 tecken.", "Write the date as YYYY-MM-DD.":
        "Skriv datumet som ÅÅÅÅ-MM-DD.",
    "The goal was changed since you opened it. Reload the page.":
        "Målet har ändrats sedan du öppnade det. Läs in sidan igen.",
}
SV.update(PLAN)

# -- contact paths: /mitt "Så når du oss" (mitt/contact.html), /personal/enhet (personal/unit.html, unit.py)
SV |= {
    "Monday–Friday": "Måndag–fredag",
    "Monday–Thursday": "Måndag–torsdag",
    "Every day": "Alla dagar",
    "Saturday–Sunday": "Lördag–söndag",
    "Monday": "Måndag",
    "Tuesday": "Tisdag",
    "Wednesday": "Onsdag",
    "Thursday": "Torsdag",
    "Friday": "Fredag",
    "Saturday": "Lördag",
    "Sunday": "Söndag",
    "Choose the days these times are for.": "Välj vilka dagar tiderna gäller.",
    "Choose the days from the list.": "Välj dagarna i listan.",
    "Write the time as HH:MM, for example 08:00.": "Skriv tiden som TT:MM, till exempel 08:00.",
    "The end must be after the start.": "Sluttiden ska vara efter starttiden.",
    "Write the phone number with digits, for example 0123-456 78.":
        "Skriv telefonnumret med siffror, till exempel 0123-456 78.",
    "Write the phone number the telephone hours are for.": "Skriv telefonnumret som telefontiderna gäller.",
    "Write the postal code as five digits, for example 123 45.":
        "Skriv postnumret med fem siffror, till exempel 123 45.",
    "Write at most 100 characters.": "Skriv högst 100 tecken.",
    "Someone else changed the unit's contact details since you opened the page. "
    "Reload the page and make your change again.":
        "Någon annan har ändrat enhetens kontaktuppgifter sedan du öppnade sidan. Ladda om sidan och gör din "
        "ändring igen.",
    "Mon": "mån",
    "Tue": "tis",
    "Wed": "ons",
    "Thu": "tors",
    "Fri": "fre",
    "Sat": "lör",
    "Sun": "sön",
    "all day": "hela dygnet",
    "How to reach us": "Så når du oss",
    "Direct number": "Direktnummer",
    "answers": "svarar",
    "Other times: call %(unit)s": "Andra tider: ring %(unit)s",
    "Call %(unit)s and ask for %(name)s": "Ring %(unit)s och fråga efter %(name)s",
    "Telephone hours": "Telefontider",
    "Address": "Adress",
    "Opening hours": "Öppettider",
    "When the unit is closed": "När mottagningen är stängd",
    "For medical advice at any time of day: call": "Sjukvårdsrådgivning dygnet runt: ring",
    "If it is an emergency or life-threatening: call": "Vid akut eller livshotande tillstånd: ring",
    "The unit's contact details": "Enhetens kontaktuppgifter",
    "Choose the days and write the times, for example 08:00 and 10:00. "
    "Leave the times empty for all day. Leave a row empty to remove it.":
        "Välj dagar och skriv tiderna, till exempel 08:00 och 10:00. Lämna tiderna tomma för hela dygnet. "
        "Lämna en rad tom för att ta bort den.",
    "Days": "Dagar",
    "row %(num)d": "rad %(num)d",
    "No time": "Ingen tid",
    "From": "Från",
    "To": "Till",
    "%(unit)s. The unit's patients see these details in their Patientkontrakt, under “How to reach us”.":
        "%(unit)s. Enhetens patienter ser uppgifterna i sitt patientkontrakt, under ”Så når du oss”.",
    "The unit's phone number": "Enhetens telefonnummer",
    "Address and opening hours": "Adress och öppettider",
    "Street address": "Gatuadress",
    "Postal code": "Postnummer",
    "City": "Ort",
    # /mitt: "Dina spärrar och samtycken" (mitt/consents.html) and the SIP beside the agreement (mitt/sip.html)
    "Your blocks and consents": "Dina spärrar och samtycken",
    "Who in the care may see information about you from other care providers, and what you have blocked.":
        "Vem i vården som får ta del av uppgifter om dig från andra vårdgivare, och vad du har spärrat.",
    "See your blocks and consents": "Se dina spärrar och samtycken",
    "Each care provider – the region, the kommun or a private clinic – keeps its own records about you. "
    "Here you see who in the care may see information about you from other care providers (your consents), "
    "and what you have blocked (your blocks).":
        "Varje vårdgivare – regionen, kommunen eller en privat mottagning – har sin egen journal om dig. Här ser "
        "du vem i vården som får ta del av uppgifter om dig från andra vårdgivare (dina samtycken), och vad du "
        "har spärrat (dina spärrar).",
    "You have no blocks and no consents": "Du har inga spärrar och inga samtycken",
    "The care may read what other care providers have written about you only with your consent, or in an "
    "emergency when you cannot answer. If you want to give a consent or block information, talk to your care unit.":
        "Vården får läsa det som andra vårdgivare har skrivit om dig bara med ditt samtycke, eller i en nödsituation "
        "när du inte kan svara. Vill du ge ett samtycke eller spärra uppgifter? Prata med din vårdenhet.",
    "Your consents": "Dina samtycken",
    "Your blocks": "Dina spärrar",
    "Consent (samtycke)": "Samtycke",
    "Internal block (inre spärr)": "Inre spärr",
    "External block (yttre spärr)": "Yttre spärr",
    "a care unit": "en vårdenhet",
    "You have given your consent for %(unit)s to see information about you from other care providers.":
        "Du har gett ditt samtycke till att %(unit)s får ta del av uppgifter om dig från andra vårdgivare.",
    "It covers the information at %(units)s.": "Det gäller uppgifterna hos %(units)s.",
    "The information at %(unit)s is blocked: it is not shown to other units, not even at other care providers.":
        "Uppgifterna hos %(unit)s är spärrade: de visas inte för andra enheter, inte heller hos andra vårdgivare.",
    "The information at %(unit)s is blocked: it is not shown to other care providers.":
        "Uppgifterna hos %(unit)s är spärrade: de visas inte för andra vårdgivare.",
    "Valid from %(start)s to %(end)s": "Gäller från %(start)s till och med %(end)s",
    "Valid from %(start)s until further notice": "Gäller från %(start)s tills vidare",
    "Valid until %(end)s": "Gäller till och med %(end)s",
    "Recorded by %(unit)s on %(date)s": "Registrerat av %(unit)s den %(date)s",
    "Recorded on %(date)s": "Registrerat den %(date)s",
    "You can take back your consent at any time. Contact %(unit)s.":
        "Du kan när som helst ta tillbaka ditt samtycke. Kontakta %(unit)s.",
    "A block is lifted only at your request, by the care unit that holds the information. Contact %(unit)s.":
        "En spärr hävs bara om du begär det, av den vårdenhet som har uppgifterna. Kontakta %(unit)s.",
    "your care unit": "din vårdenhet",
    "You have not given any consent.": "Du har inte gett något samtycke.",
    "You have no blocks.": "Du har inga spärrar.",
    "Earlier": "Tidigare",
    "These no longer apply.": "De här gäller inte längre.",
    "ended": "har upphört", "taken back": "återtaget", "lifted": "hävd",
    "What do consent and block mean?": "Vad betyder samtycke och spärr?",
    "With your consent, a care unit may see what other care providers have written about you, when it needs it "
    "for your care. Without it, each care provider sees only its own information about you.":
        "Med ditt samtycke får en vårdenhet ta del av det som andra vårdgivare har skrivit om dig, när den behöver "
        "det för din vård. Utan samtycke ser varje vårdgivare bara sina egna uppgifter om dig.",
    "What a care unit has written about you is not shown to any other unit: not to the other units of the same "
    "care provider, and not to other care providers.":
        "Det som en vårdenhet har skrivit om dig visas inte för någon annan enhet: varken för samma vårdgivares "
        "andra enheter eller för andra vårdgivare.",
    "What a care unit or care provider has written about you is not shown to other care providers, even if you "
    "have given them your consent.":
        "Det som en vårdenhet eller vårdgivare har skrivit om dig visas inte för andra vårdgivare, inte ens om du "
        "har gett dem ditt samtycke.",
    "You decide. A consent or a block is recorded by the care unit you ask. A block is lifted only at your request, "
    "by the care unit that holds the information; not even in an emergency may the care look past a block.":
        "Det är du som bestämmer. Ett samtycke eller en spärr registreras av den vårdenhet du ber om det. En spärr "
        "hävs bara om du begär det, av den vårdenhet som har uppgifterna. Inte ens i en nödsituation får vården gå "
        "förbi en spärr.",
    "In your SIP (coordinated individual plan)": "I din SIP (samordnad individuell plan)",
    "A SIP is the plan the region and the kommun have made together with you: who does what.":
        "En SIP är planen som regionen och kommunen har gjort tillsammans med dig: vem som gör vad.",
    "The region has the overall responsibility for your SIP.": "Regionen har det övergripande ansvaret för din SIP.",
    "The kommun has the overall responsibility for your SIP.": "Kommunen har det övergripande ansvaret för din SIP.",
    "Who does it": "Vem gör det",
    "The region": "Regionen", "The kommun": "Kommunen", "Other": "Annan",
}


# -- the provider's log review: /personal/logg (personal/log_review.html, log_review.py)
SV |= {
    "Log review": "Logggranskning",
    "Every access to patient data at the care provider's units. Review the emergency accesses first: "
    "was each one needed, and is the reason enough?":
        "All åtkomst till patientuppgifter vid vårdgivarens enheter. Granska nödåtkomsterna först: behövdes "
        "var och en, och räcker skälet?",
    "Emergency accesses": "Nödåtkomster",
    ("%(num)d emergency access", "%(num)d emergency accesses"): ("%(num)d nödåtkomst", "%(num)d nödåtkomster"),
    "(the latest %(shown)d shown)": "(de senaste %(shown)d visas)",
    "No emergency accesses.": "Inga nödåtkomster.",
    "All accesses": "All åtkomst",
    "Search the log": "Sök i loggen",
    "User (HSA-id)": "Användare (HSA-id)",
    "Patient: personnummer or Patient id": "Patient: personnummer eller Patient-id",
    "Care unit (HSA-id)": "Vårdenhet (HSA-id)",
    "From date": "Från och med datum",
    "To date": "Till och med datum",
    "Export these accesses as CSV": "Exportera åtkomsterna som CSV",
    "(at most %(max)d rows, newest first; for Excel)": "(högst %(max)d rader, nyaste först; för Excel)",
    ("%(num)d access", "%(num)d accesses"): ("%(num)d åtkomst", "%(num)d åtkomster"),
    "No accesses found.": "Ingen åtkomst hittades.",
    "Not shown": "Visas inte",
    "User": "Användare",
    "User's HSA-id": "Användarens HSA-id",
    "Role": "Roll",
    "Care unit's HSA-id": "Vårdenhetens HSA-id",
    "Patient id": "Patient-id",
    "Purpose": "Ändamål",
    "Reason": "Skäl",
    "Action": "Åtgärd",
    "Resources": "Resurser",
    "Outcome": "Utfall",
    "Request": "Begäran",
    "Write an HSA-id, for example SE2321000016-P0001.": "Skriv ett HSA-id, till exempel SE2321000016-P0001.",
    "Write the date as YYYY-MM-DD, for example 2026-12-01.": "Skriv datumet som ÅÅÅÅ-MM-DD, till exempel 2026-12-01.",
    "Write a personnummer or a Patient id.": "Skriv ett personnummer eller ett Patient-id.",
    "Care and treatment": "Vård och behandling",
    "Emergency access": "Nödåtkomst",
    "The patient's own": "Patientens egen",
    "System administration": "Systemadministration",
}


def extract() -> Catalog:
    POT.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(ROOT / "babel.cfg"),
                    "-k", "_", "-k", "N_", "-k", "gettext", "-k", "ngettext:1,2", "--no-location",
                    "--omit-header", "-o", str(POT), str(ROOT)], check=True, capture_output=True)
    with POT.open("rb") as handle:
        return read_po(handle)


def build() -> Catalog:
    template = extract()
    catalog = Catalog(locale="sv", project="Patientkontrakt", charset="utf-8")
    missing = []
    for message in template:
        if not message.id:
            continue
        translation = SV.get(message.id)
        if translation is None:
            missing.append(message.id)
            continue
        catalog.add(message.id, translation)
    if missing:
        raise SystemExit("no Swedish for: " + "; ".join(repr(m) for m in missing))
    return catalog


def main() -> None:
    PO.parent.mkdir(parents=True, exist_ok=True)
    with PO.open("wb") as handle:
        write_po(handle, build(), omit_header=False, sort_output=True, width=100)
    print(f"wrote {PO.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
