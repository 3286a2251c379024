#!/usr/bin/env python3
"""Checks the calendar invitations of the booking emails with a third-party implementation:
Python's `icalendar` package (`pip install icalendar`; ops/test installs it).

Usage: ics_validate.py FILE.ics...   Prints one line per problem; exits 0 when there are none,
1 when there are, 3 when the package is missing.

Each file must:
- be well-formed RFC 5545 text: CRLF line ends, lines of at most 75 octets (folded);
- parse with `icalendar`, with no error recorded on any component;
- have every property the package's RFC 5545 tables require of each component, none twice
  that may occur once, none of a mutually exclusive pair together, and every property value
  decodable as its type;
- be an iTIP message (RFC 5546) of the kind our emails send: METHOD REQUEST or CANCEL, one
  VEVENT with UID, DTSTAMP, DTSTART, DTEND, SEQUENCE, ORGANIZER and an ATTENDEE; a REQUEST
  is CONFIRMED with a display alarm, a CANCEL is CANCELLED.
"""
import sys

try:
    import icalendar
except ImportError:
    print("the Python package 'icalendar' is missing: pip install icalendar (ops/test does)")
    sys.exit(3)


def structural(data):
    problems = []
    if not data.endswith(b"\r\n"):
        problems.append("does not end with CRLF")
    if b"\n" in data.replace(b"\r\n", b""):
        problems.append("has a line end that is not CRLF")
    for number, line in enumerate(data.split(b"\r\n"), start=1):
        if len(line) > 75:
            problems.append(f"line {number} is {len(line)} octets long (at most 75)")
    return problems


def component_problems(component):
    problems = []
    name = component.name
    for error in getattr(component, "errors", []) or []:
        problems.append(f"{name}: parse error {error}")
    for required in component.required:
        if required not in component:
            problems.append(f"{name}: missing required {required}")
    for single in component.singletons:
        if isinstance(component.get(single), list):
            problems.append(f"{name}: {single} occurs more than once")
    exclusive = component.exclusive
    if exclusive and sum(1 for p in exclusive if p in component) > 1:
        problems.append(f"{name}: at most one of {', '.join(exclusive)}")
    for first, *others in component.inclusive or ():
        if first in component and any(o not in component for o in others):
            problems.append(f"{name}: {first} needs {', '.join(others)}")
    for key in component.keys():
        try:
            component.decoded(key)
        except Exception as error:  # noqa: BLE001 - any failure to decode is a finding
            problems.append(f"{name}: {key} does not decode: {error}")
    return problems


def itip_problems(calendar):
    problems = []
    method = str(calendar.get("METHOD", ""))
    if method not in ("REQUEST", "CANCEL"):
        problems.append(f"METHOD is {method!r}, not REQUEST or CANCEL")
    events = calendar.walk("VEVENT")
    if len(events) != 1:
        return problems + [f"{len(events)} VEVENTs, not 1"]
    event = events[0]
    for key in ("UID", "DTSTAMP", "DTSTART", "DTEND", "SEQUENCE", "ORGANIZER", "ATTENDEE"):
        if key not in event:
            problems.append(f"VEVENT: missing {key} (RFC 5546 {method})")
    start, end = event.decoded("DTSTART"), event.decoded("DTEND")
    if getattr(start, "tzinfo", None) is None or getattr(end, "tzinfo", None) is None:
        problems.append("VEVENT: DTSTART/DTEND are floating times (no zone, not UTC)")
    elif not start < end:
        problems.append("VEVENT: DTEND is not after DTSTART")
    status = str(event.get("STATUS", ""))
    alarms = event.walk("VALARM")
    if method == "REQUEST":
        if status != "CONFIRMED":
            problems.append(f"VEVENT: a REQUEST with STATUS {status!r}")
        if not any(str(a.get("ACTION")) == "DISPLAY" and "DESCRIPTION" in a for a in alarms):
            problems.append("VEVENT: a REQUEST without a display alarm")
    if method == "CANCEL" and status != "CANCELLED":
        problems.append(f"VEVENT: a CANCEL with STATUS {status!r}")
    return problems


def check(path):
    with open(path, "rb") as f:
        data = f.read()
    problems = structural(data)
    try:
        calendars = icalendar.Calendar.from_ical(data, multiple=True)
    except ValueError as error:
        return problems + [f"does not parse: {error}"]
    if len(calendars) != 1:
        return problems + [f"{len(calendars)} calendars, not 1"]
    calendar = calendars[0]
    try:
        calendar.validate()
    except Exception as error:  # noqa: BLE001
        problems.append(f"VCALENDAR: {error}")
    for component in calendar.walk():
        problems += component_problems(component)
    problems += itip_problems(calendar)
    return problems


def main(paths):
    if not paths:
        print(__doc__)
        return 2
    failed = False
    for path in paths:
        problems = check(path)
        for problem in problems:
            print(f"{path}: {problem}")
        failed = failed or bool(problems)
        if not problems:
            print(f"{path}: valid (icalendar {icalendar.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
