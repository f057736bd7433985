"""Vars plugin: say what to create or pass when an inventory's vault.yml cannot be opened.

Ansible loads group_vars/<group>/vault.yml (created with ansible-vault from vault.yml.example) before
any task runs, so without a vault password a run stops with "Attempting to decrypt but no vault
secrets found", and with a wrong one with "Decryption failed". This plugin runs first (ansible.cfg:
vars_plugins_enabled) and, for each vault-encrypted file of the inventory's group_vars and host_vars,
stops the run with a message naming the file and what to pass instead. It never reads a secret's value
beyond decrypting once to check the password; it returns no variables.
"""

import os

from ansible.errors import AnsibleError
from ansible.inventory.group import InventoryObjectType
from ansible.parsing.vault import is_encrypted_file
from ansible.plugins.vars import BaseVarsPlugin

DOCUMENTATION = r"""
name: pgmigrate_vault
short_description: Explain an inventory's vault file that cannot be opened
description:
  - Stops the run, naming the file and the remedy (--ask-vault-pass, --vault-password-file, the AWX
    Vault credential), when a vault-encrypted group_vars or host_vars file has no password or a wrong one.
options:
  stage:
    ini:
      - {key: stage, section: vars_pgmigrate_vault}
    env:
      - name: ANSIBLE_VARS_PLUGIN_STAGE
extends_documentation_fragment:
  - vars_plugin_staging
"""

REMEDY = (
    "Pass the vault password: --ask-vault-pass, or --vault-password-file FILE (also taken by "
    "scripts/pgmigrate-run); under AWX, attach the environment's Vault credential (awx/vars/controller.yml, "
    "vault_credential) to the job template. The file's structure is in vault.yml.example beside it."
)
CHECKED = set()
SEEN = set()  # (path, subdir, entity) already looked at: vars plugins are asked again for every task


def encrypted(path):
    with open(path, "rb") as handle:
        return is_encrypted_file(handle)


def problem(loader, path):
    """None when the file opens with the vault password given, else the message."""
    vault = loader._vault  # noqa: SLF001 - the DataLoader's own VaultLib, holding the secrets given
    if not vault.secrets:
        return f"{path} is encrypted with ansible-vault and no vault password was given. {REMEDY}"
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        vault.decrypt(data)
    except AnsibleError:
        return (f"The vault password given does not open {path} (encrypted with another password or "
                f"vault id). {REMEDY}")
    return None


class VarsModule(BaseVarsPlugin):
    REQUIRES_ENABLED = True
    is_stateless = True

    def get_vars(self, loader, path, entities, cache=True):
        for entity in entities if isinstance(entities, list) else [entities]:
            subdir = "host_vars" if entity.base_type is InventoryObjectType.HOST else "group_vars"
            key = (path, subdir, entity.name)
            if key in SEEN:
                continue
            directory = os.path.join(os.path.realpath(path if os.path.isdir(path) else os.path.dirname(path)), subdir)
            if os.path.isdir(directory):
                for found in loader.find_vars_files(directory, entity.name):
                    self.check(loader, str(found))
            SEEN.add(key)
        return {}

    @staticmethod
    def check(loader, path):
        if path in CHECKED:
            return
        message = problem(loader, path) if encrypted(path) else None
        if message:
            raise AnsibleError(message)
        CHECKED.add(path)
