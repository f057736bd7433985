"""Lookup: the process id of the running ansible-playbook (the controller's main process).

Task workers are forked from it, so a worker's parent is the playbook itself. The copy module
watches this process and stops cleanly when it is killed, so a rerun never races an orphan.
"""

import os

from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: controller_pid
short_description: PID of the running ansible-playbook process
description:
  - Returns the process id of the ansible-playbook (or ansible-runner's playbook) process running the play.
"""

EXAMPLES = r"""
- name: Show it
  ansible.builtin.debug:
    msg: "{{ lookup('controller_pid') }}"
"""

RETURN = r"""
_raw:
  description: one process id
  type: list
  elements: int
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [os.getppid()]
