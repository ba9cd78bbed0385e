"""What the SMTP door says to a crew member, as catalogue sentences (msgids).

Here, next to the crew page's sentences, so that ``pybabel extract`` puts them into
``crew.pot`` (``[tool.babel]`` in pyproject.toml) and translators see them with the rest;
:mod:`shipboard.smtp_replies` turns them into SMTP replies. ``{fields}`` are filled in
after translation. Each sentence says what is wrong and what to do, in plain words.
"""

from __future__ import annotations

# --- size (5.3.4) ---------------------------------------------------------------------------
MAIL_TOO_BIG = (
    "This mail is too big for the vessel ({size} KB; at most {limit} KB). Only text is sent "
    "at sea: remove photos and attachments, then send it again."
)
MAIL_OVER_LIMIT = (
    "This mail is bigger than the vessel takes (at most {limit} KB). Only text is sent at "
    "sea: remove photos and attachments, then send it again."
)

# --- content (5.6.x) ------------------------------------------------------------------------
EMPTY_MAIL = "The mail has no text. Write your message in the mail itself, then send it again."
NOT_UTF8 = (
    "The mail's text cannot be read: it says it is written in {charset}, but it is not. Set "
    "your mail app to Unicode (UTF-8) and send it again."
)
UNKNOWN_CHARSET = (
    "The mail's text is in an encoding the vessel cannot read ({charset}). Set your mail app "
    "to Unicode (UTF-8) and send it again."
)
ONLY_ATTACHMENTS = (
    "The mail has attachments but no text. Only text is sent at sea: write your message in "
    "the mail itself, then send it again."
)
LINE_TOO_LONG = (
    "A line of this mail is longer than mail allows (998 characters). Let your mail app "
    "break long lines, then send it again."
)

# --- grievance reports by mail --------------------------------------------------------------
REPORT_SAVED = (
    "Your report is saved on board, sealed so that only {union} can read it. Case number "
    "{case}, receipt code {receipt}: keep both. Your cases are also on the crew page."
)
REPORT_ALONE = (
    "A report goes to one union, in a mail of its own. Send it again to one report address "
    "only, with no other address."
)
NO_SUCH_REPORT_ADDRESS = (
    "No union of this vessel has this report address. Send your report to one of these:"
)
UNION_LIST = (
    "This address takes no mail: it lists where to send a report. Send your report to one of "
    "these; it is sealed on board so that only that union can read it:"
)
