"""Start `ansible-playbook migrate.yml -i <inventory> [args]` and interrupt it as a task begins, as an operator's
Ctrl-C or a killed AWX job would: the whole process group gets the signal half a second after the task's header.

    interrupt_migrate.py <log> <INT|KILL> <task prefix> <inventory> [ansible-playbook arguments...]

Exits 0 once the run was interrupted there (its output, to that moment, in <log>); 1 when the run ended
before the task began, or ended by itself."""

import os
import signal
import subprocess
import sys
import time


def main(log_path, signal_name, task_prefix, inventory, *arguments):
    sig = {"INT": signal.SIGINT, "KILL": signal.SIGKILL}[signal_name]
    proc = subprocess.Popen(["ansible-playbook", "migrate.yml", "-i", inventory, *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    interrupted = False
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(line)
            if line.startswith("TASK [" + task_prefix):
                time.sleep(0.5)  # inside the task
                os.killpg(proc.pid, sig)
                interrupted = True
                break
        proc.stdout.close()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.write(f"\ninterrupted: {interrupted}, signal {signal_name}, exit code {proc.returncode}\n")
    return 0 if interrupted and proc.returncode != 0 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
