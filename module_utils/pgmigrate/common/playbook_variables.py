"""What the project's callback plugins read of a running playbook: the variables of the first
migration_controller host as its tasks see them (group_vars, host_vars, -e), and one setting rendered the way
a task would render it (vaulted values and lookups work). Needs Ansible: for plugins, never for modules."""

CONTROLLER_GROUP = "migration_controller"


class NoPlayError(Exception):
    """No play started yet, so there is no inventory to read from."""


def controller_variables(play):
    """(variables, templar) of the first migration_controller host (localhost when the group is absent)."""
    from ansible.template import Templar

    if play is None:
        raise NoPlayError("no play started, so no inventory to read the settings from")
    variable_manager, loader = play.get_variable_manager(), play.get_loader()
    inventory = variable_manager._inventory
    hosts = inventory.get_groups_dict().get(CONTROLLER_GROUP) or ["localhost"]
    variables = variable_manager.get_vars(play=play, host=inventory.get_host(hosts[0]))
    return variables, Templar(loader=loader, variables=variables)


def rendered_text(variables, templar, name):
    """The setting `name` rendered as text; None when unset, empty or not renderable."""
    try:
        value = templar.template(variables.get(name)) if name in variables else None
    except Exception:  # noqa: BLE001 - a setting that cannot be rendered is as good as unset here
        return None
    return str(value) if value not in (None, "") else None
