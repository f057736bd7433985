"""The migration_* settings checked before anything changes (playbooks/checks/inventory.yml).

A spec maps each setting's name to what it accepts: {type, min, max, choices, accepts}. Types:
int, bool, str, choice, size (bytes or a number with kB/MB/GB/TB), duration (PostgreSQL: a number of
milliseconds or a number with us/ms/s/min/h/d), list (of strings), order (list of {table, level}),
substitutes (mapping {extension: {function: SQL body}}, a body-less extension {} or empty).
Values given with -e arrive as strings ("0", "abc", "true"): each type reads them as Ansible does.
Every problem is one message naming the variable, its value and what is accepted.
"""

import difflib
import re

from .module_args import parse_size

TRUE_WORDS = ("true", "yes", "on", "1", "y", "t")
FALSE_WORDS = ("false", "no", "off", "0", "n", "f")
DURATION = re.compile(r"^\s*\d+(\.\d+)?\s*(us|ms|s|min|h|d)?\s*$")


class SettingError(ValueError):
    """A setting's value is not of its type."""


TYPE_WORDS = {
    "int": "a whole number",
    "bool": "true or false",
    "size": "a size: a number of bytes, or a number with kB, MB, GB or TB (e.g. 1GB)",
    "duration": "a PostgreSQL duration: milliseconds, or a number with ms, s, min, h or d (e.g. 60s)",
    "str": "a string",
    "choice": "a string",
    "list": "a list of names (e.g. [public, sales])",
    "order": "a list of {table: name, level: number}",
    "substitutes": "a mapping {extension: {function: SQL body}} (e.g. {uuid-ossp: {uuid_generate_v4: SELECT "
                   "pg_catalog.gen_random_uuid()}, pgcrypto: {}})",
}


def as_int(value):
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", text):
        raise SettingError(TYPE_WORDS["int"])
    return int(text)


def as_bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in TRUE_WORDS + FALSE_WORDS:
        raise SettingError(TYPE_WORDS["bool"])
    return text in TRUE_WORDS


def as_size(value):
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        return parse_size(value)
    except ValueError:
        raise SettingError(TYPE_WORDS["size"]) from None


def as_duration(value):
    if isinstance(value, bool) or not DURATION.match(str(value)):
        raise SettingError(TYPE_WORDS["duration"])
    return str(value).strip()


def as_str(value):
    if not isinstance(value, str):
        raise SettingError(TYPE_WORDS["str"])
    return value


def as_list(value):
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingError(TYPE_WORDS["list"])
    return value


def as_order(value):
    good = isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("table"), str) for item in value)
    if not good:
        raise SettingError(TYPE_WORDS["order"])
    for item in value:
        if "level" in item:
            as_int(item["level"])
    return value


def as_substitutes(value):
    good = isinstance(value, dict) and all(
        isinstance(extension, str) and extension and (
            functions is None or isinstance(functions, dict) and all(
                isinstance(name, str) and name and isinstance(body, str) and body.strip()
                for name, body in functions.items()))
        for extension, functions in value.items())
    if not good:
        raise SettingError(TYPE_WORDS["substitutes"])
    return value


READERS = {"int": as_int, "bool": as_bool, "size": as_size, "duration": as_duration, "str": as_str,
           "list": as_list, "order": as_order, "choice": as_str, "substitutes": as_substitutes}


def accepted(rule):
    """What a rule accepts, in words."""
    if rule.get("accepts"):
        return rule["accepts"]
    if rule.get("choices"):
        return "one of " + ", ".join(str(choice) for choice in rule["choices"])
    if rule["type"] == "int" and "min" in rule and "max" in rule:
        return f"a whole number from {rule['min']} to {rule['max']}"
    if rule["type"] == "int" and "min" in rule:
        return f"a whole number of at least {rule['min']}"
    if rule["type"] == "size" and rule.get("min"):
        return f"{TYPE_WORDS['size']}, at least {rule['min']} bytes"
    return TYPE_WORDS[rule["type"]]


def in_range(read, rule):
    if rule.get("choices") and read not in rule["choices"]:
        return False
    if "min" in rule and read < rule["min"]:
        return False
    if "max" in rule and read > rule["max"]:
        return False
    return not (rule.get("nonempty") and not read)


def problems(settings, spec):
    """One message per setting that is not accepted, in the spec's order: name, value, what is accepted."""
    found = []
    for name, rule in spec.items():
        if name not in settings:
            continue
        value = settings[name]
        try:
            good = in_range(READERS[rule["type"]](value), rule)
        except SettingError:
            good = False
        if not good:
            found.append(f"{name}={value!r} is not accepted: it must be {accepted(rule)}.")
    return found


def misspelled(names, known, ignore=()):
    """One message per name that is not a known setting but is one letter or two away from one (a typo
    that would otherwise be ignored, the default silently used): `migration_worker` -> migration_workers.
    Names far from every known one are the inventory's own variables and are left alone, as are names
    matching a regular expression of ignore (e.g. the application profiles, migration_profile_<name>)."""
    known = sorted(set(known))
    found = []
    for name in sorted(set(names) - set(known)):
        if any(re.search(pattern, name) for pattern in ignore):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            found.append(f"{name} is not a setting of this project: did you mean {close[0]}? (as written it "
                         f"would be ignored and {close[0]} keep its default)")
    return found
