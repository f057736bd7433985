"""Filters of awx/configure.yml (Ansible loads filter_plugins/ beside the playbook): which database connection
credentials the job templates need, whether the secrets file gives each one the inputs its credential type
requires, and those inputs as AWX stores them. Messages name settings and fields, never a value."""

import re

NOTIFICATION_EVENTS = ("started", "success", "error")


def awx_needed_connections(job_templates, default_connections):
    """[[environment, variable], ...]: every connection credential the job templates attach, each once."""
    needed = []
    for template in job_templates:
        for environment in template.get("environments", []):
            for variable in template.get("connections", default_connections):
                pair = [environment["name"], variable]
                if pair not in needed:
                    needed.append(pair)
    return needed


def awx_connection_inputs(entry, inputs_spec):
    """A connection of the secrets file as the inputs of its AWX credential: strings (AWX custom fields are
    strings), defaults of the credential type filled in, unset optional fields left out."""
    defaults = {f["id"]: f["default"] for f in inputs_spec["fields"] if "default" in f}
    values = {**defaults, **{k: v for k, v in (entry or {}).items() if v not in (None, "")}}
    return {k: str(v) for k, v in values.items()}


def awx_connection_problems(connections, needed, inputs_spec, setting="awx_database_connections"):
    """What is missing or wrong in the secrets file's connections, one sentence each."""
    fields = {f["id"]: f for f in inputs_spec["fields"]}
    problems = []
    if not isinstance(connections, dict):
        return [f"{setting} must be a mapping of environment -> connection variable -> connection."]
    for environment, variable in needed:
        where = f"{setting}.{environment}.{variable}"
        entry = (connections.get(environment) or {}).get(variable)
        if not isinstance(entry, dict):
            needs = [name for name in inputs_spec["required"] if "default" not in fields[name]]
            problems.append(f"{where} is not set: the job templates of {environment} attach its credential. Give it "
                            f"{', '.join(needs)} (awx/secrets.yml.example).")
            continue
        unknown = sorted(set(entry) - set(fields))
        if unknown:
            problems.append(f"{where} has unknown keys {', '.join(unknown)}; accepted: {', '.join(fields)}.")
        values = awx_connection_inputs(entry, inputs_spec)
        missing = [name for name in inputs_spec["required"] if not values.get(name)]
        if missing:
            problems.append(f"{where} lacks {', '.join(missing)}.")
        port = values.get("port", "")
        if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
            problems.append(f"{where}.port must be a number from 1 to 65535.")
        for name, field in fields.items():
            if field.get("multiline") and values.get(name) and "-----BEGIN " not in values[name]:
                problems.append(f"{where}.{name} must be the PEM contents (-----BEGIN ...), not a path: AWX writes "
                                "them to a file inside each job.")
            if "choices" in field and values.get(name) and values[name] not in field["choices"]:
                problems.append(f"{where}.{name} must be one of {', '.join(field['choices'])}.")
    return problems


def awx_notification_problems(templates, secrets, kinds, setting="awx_notification_secrets"):
    """What is wrong in awx_notification_templates or missing from the secrets file, one sentence each."""
    problems = []
    names = [t.get("name") for t in templates]
    if len(set(names)) != len(names):
        problems.append("awx_notification_templates: two entries have the same name.")
    for template in templates:
        name = template.get("name")
        if template.get("notification_type") not in kinds:
            problems.append(f"awx_notification_templates {name}: notification_type must be one of {', '.join(kinds)}.")
        bad = sorted(set(template.get("events", [])) - set(NOTIFICATION_EVENTS))
        if bad or not template.get("events"):
            problems.append(f"awx_notification_templates {name}: events must list some of "
                            f"{', '.join(NOTIFICATION_EVENTS)}.")
        given = (secrets or {}).get(name) or {}
        missing = [key for key in template.get("secrets", []) if given.get(key) in (None, "")]
        if missing:
            problems.append(f"{setting}['{name}'] lacks {', '.join(missing)} (the secret part of its configuration).")
    return problems


def awx_notifications_on(templates, event, existing=()):
    """Names of the notification templates to attach for event (started, success, error), then existing ones."""
    names = [t["name"] for t in templates if event in t.get("events", [])]
    return names + [name for name in existing if name not in names]


class FilterModule:
    def filters(self):
        return {
            "awx_needed_connections": awx_needed_connections,
            "awx_connection_inputs": awx_connection_inputs,
            "awx_connection_problems": awx_connection_problems,
            "awx_notification_problems": awx_notification_problems,
            "awx_notifications_on": awx_notifications_on,
        }
