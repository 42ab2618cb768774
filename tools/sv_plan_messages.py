"""Swedish for the pages of the agreement's life (``api/pages/plan_changes.py``,
``activity_changes.py``, ``goal_changes.py``, ``lifecycle.py`` and their templates): changing and cancelling activities and goals, closing, reopening, earlier
agreements. Kept apart from ``sv_messages.SV`` so that parallel work on other pages merges cleanly."""

from __future__ import annotations

PLAN: dict[str | tuple[str, str], str | tuple[str, str]] = {
    # closing
    "How does the agreement end?": "Hur avslutas patientkontraktet?",
    "Choose how the agreement ends.": "Välj hur patientkontraktet avslutas.",
    "Say why the agreement is closed.": "Ange varför patientkontraktet avslutas.",
    "Choose what happens to the goals.": "Välj vad som händer med målen.",
    "Confirm that the agreement is to be closed.": "Bekräfta att patientkontraktet ska avslutas.",
    "Someone else changed the agreement since you opened the page. Check it and close it again.":
        "Någon annan har ändrat patientkontraktet sedan du öppnade sidan. Kontrollera det och avsluta igen.",
    "A closed agreement can no longer be changed. It stays readable for you and for the patient.":
        "Ett avslutat patientkontrakt kan inte längre ändras. Det går fortfarande att läsa för dig och för "
        "patienten.",
    "Kept in the agreement's history, and given as the reason for the activities that are called off.":
        "Sparas i patientkontraktets historik och anges som skäl för de aktiviteter som ställs in.",
    "What happens to the future activities": "Vad som händer med kommande aktiviteter",
    ("This activity of your unit is called off, with the reason above:",
     "These %(num)d activities of your unit are called off, with the reason above:"):
        ("Den här aktiviteten hos er enhet ställs in, med skälet ovan:",
         "De här %(num)d aktiviteterna hos er enhet ställs in, med skälet ovan:"),
    "Your unit has no future activities in the agreement.":
        "Er enhet har inga kommande aktiviteter i patientkontraktet.",
    "These belong to other units and stay as they are; tell those units that the agreement is closed:":
        "De här hör till andra enheter och ligger kvar som de är; berätta för dem att patientkontraktet avslutas:",
    "What happens to the goals": "Vad som händer med målen",
    ("The agreement has one open goal:", "The agreement has %(num)d open goals:"):
        ("Patientkontraktet har ett pågående mål:", "Patientkontraktet har %(num)d pågående mål:"),
    "Leave the goals as they are": "Låt målen vara som de är",
    "End the goals too (no longer pursued)": "Avsluta också målen (de arbetas inte längre mot)",
    "I confirm that the agreement is closed now": "Jag bekräftar att patientkontraktet avslutas nu",
    # closed, reopening
    "The agreement is closed and cannot be changed": "Avtalet är avslutat och kan inte ändras",
    "The agreement with %(name)s has the status %(status)s since %(date)s. A closed agreement stays "
    "readable, but nothing in it can be changed.":
        "Patientkontraktet med %(name)s har status %(status)s sedan %(date)s. Ett avslutat patientkontrakt "
        "går att läsa, men ingenting i det kan ändras.",
    "If it has to be changed after all, reopen it first and say why; the reason is kept in its history.":
        "Om det ändå måste ändras: återöppna det först och ange varför; skälet sparas i historiken.",
    "Back to the agreement": "Tillbaka till patientkontraktet",
    "This agreement is closed and can no longer be changed. It stays here to read.":
        "Patientkontraktet är avslutat och kan inte längre ändras. Det finns kvar här att läsa.",
    "Reopen the agreement": "Återöppna patientkontraktet",
    "Why is it reopened?": "Varför återöppnas det?",
    "Say why the agreement is reopened.": "Ange varför patientkontraktet återöppnas.",
    "The agreement becomes active again and can be changed. Activities that were called off stay called "
    "off; plan new ones if needed.":
        "Patientkontraktet blir gällande igen och kan ändras. Inställda aktiviteter förblir inställda; planera "
        "nya om det behövs.",
    "Someone else changed the agreement since you opened the page. Reload it and try again.":
        "Någon annan har ändrat patientkontraktet sedan du öppnade sidan. Ladda om och försök igen.",
    # activities
    "Change or cancel": "Ändra eller ställ in",
    "Change or cancel an activity": "Ändra eller ställ in en aktivitet",
    "The activity is never removed: a cancelled one stays in the agreement with its reason, and every "
    "change is kept in the history.":
        "Aktiviteten tas aldrig bort: en inställd aktivitet finns kvar i patientkontraktet med sitt skäl, och "
        "varje ändring sparas i historiken.",
    "Change it": "Ändra den",
    "Why (required, kept in the history)": "Varför (krävs, sparas i historiken)",
    "Save the change": "Spara ändringen",
    "Cancel the activity": "Ställ in aktiviteten",
    "Back without changing": "Tillbaka utan att ändra",
    "The activity is already cancelled.": "Aktiviteten är redan inställd.",
    "Say why the activity is cancelled.": "Ange varför aktiviteten ställs in.",
    "Say why the activity changes.": "Ange varför aktiviteten ändras.",
    "Called off": "Inställd",
    "Called-off activities": "Inställda aktiviteter",
    "History of changes": "Ändringshistorik",
    "why": "varför",
    # goals
    "Change the care's goal": "Ändra vårdens mål",
    "The goal": "Målet",
    "Describe the goal.": "Beskriv målet.",
    "Choose the goal's status.": "Välj målets status.",
    "Say why the goal changes.": "Ange varför målet ändras.",
    "Enter the date as YYYY-MM-DD.": "Ange datumet som ÅÅÅÅ-MM-DD.",
    "Someone else changed the goal since you opened the page. Reload it and try again.":
        "Någon annan har ändrat målet sedan du öppnade sidan. Ladda om och försök igen.",
    "Ended, not achieved": "Avslutat, inte uppnått",
    "Not achieved": "Inte uppnått",
    "Ended": "Avslutat",
    "Withdrawn": "Tillbakataget",
    "How is it going?": "Hur går det?",
    "I am still working on it": "Jag arbetar fortfarande mot det",
    "I withdraw this goal: it no longer matters to me": "Jag tar tillbaka målet: det är inte viktigt för mig längre",
    "Why, if you want to say (optional)": "Varför, om du vill berätta (frivilligt)",
    # earlier agreements on /mitt
    "Your Patientkontrakt has been closed": "Ditt patientkontrakt är avslutat",
    "You can still read it under Earlier Patientkontrakt below. If you need a new one, ask your vårdcentral.":
        "Du kan fortfarande läsa det under Tidigare patientkontrakt nedan. Om du behöver ett nytt, fråga din "
        "vårdcentral.",
    "Earlier Patientkontrakt": "Tidigare patientkontrakt",
    "Show the agreement": "Visa patientkontraktet",
    "Activities": "Aktiviteter",
    "Goals": "Mål",
}
