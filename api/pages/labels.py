"""Message ids for codes the pages show (English; the Swedish is in the catalogue).

``N_`` marks a string for extraction (``make messages``) without translating it here: the
template translates it with the page's language.
"""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802 - the gettext convention
    return message


STATUS = {
    "draft": N_("Draft"),
    "active": N_("Active"),
    "on-hold": N_("On hold"),
    "completed": N_("Completed"),
    "revoked": N_("Ended early"),
    "entered-in-error": N_("Entered in error"),
    "unknown": N_("Unknown"),
}
GOAL_STATUS = {
    "proposed": N_("Proposed"),
    "planned": N_("Planned"),
    "accepted": N_("Accepted"),
    "active": N_("Ongoing"),
    "on-hold": N_("On hold"),
    "completed": N_("Achieved"),
    "cancelled": N_("Cancelled"),
    "entered-in-error": N_("Entered in error"),
    "rejected": N_("Rejected"),
}
SORT = {"updated": N_("Last changed"), "start": N_("Start date"), "status": N_("Status")}
# What someone in the care did, as the patient reads it in "Who has read my Patientkontrakt".
INTERACTION = {
    "read": N_("read your agreement"),
    "vread": N_("read an earlier version of your agreement"),
    "search-type": N_("found your agreement in a list when searching"),
    "history-instance": N_("read the history of changes to your agreement"),
    "history-type": N_("read the history of changes to your agreement"),
    "history-system": N_("read the history of changes to your agreement"),
    "operation": N_("opened your whole agreement"),
    "create": N_("wrote new information in your agreement"),
    "update": N_("changed your agreement"),
    "delete": N_("removed information from your agreement"),
    "transaction": N_("changed your agreement"),
}
FIELD = {"title": N_("Title"), "description": N_("The plan in plain language"), "status": N_("Status"),
         "end": N_("End date")}
# The roles in a care team, in plain words (the code system's "Övrig" is "Deltagare" here).
ROLE = {
    "fast-vardkontakt": N_("Named care contact"),
    "fast-lakarkontakt": N_("Named physician"),
    "kontaktperson-kommun": N_("Municipal contact person"),
    "narstaende": N_("Next of kin"),
    "ovrig": N_("Participant"),
    "patient": N_("Patient"),
}
# What each status means for the patient, in a sentence after the status.
STATUS_EXPLAINED = {
    "draft": N_("The agreement is still being written. It does not apply yet."),
    "active": N_("This is what you and your care have agreed, and it applies now."),
    "on-hold": N_("The agreement does not apply for the moment, for example while you are in hospital. "
                  "It can apply again later."),
    "completed": N_("What you agreed has been done. The agreement no longer applies."),
    "revoked": N_("The agreement was ended before everything in it was done. It no longer applies."),
    "entered-in-error": N_("The agreement was written by mistake and does not apply."),
    "unknown": N_("The care has not said whether the agreement applies. Ask your fast vårdkontakt."),
}
READER_REFUSED = N_("tried to read your agreement but was not allowed to")
