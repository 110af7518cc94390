"""Ctrl-C pressed while the driver waits in a Spark job, many times over: each must end as a
KeyboardInterrupt, with the session still usable (run by tests/test_edges.py; prints one line per
press, then `ok N` or `bad N`)."""

import logging
import os
import signal
import sys
import threading
import time

from spark_lance_index import interrupts
from spark_lance_index import spark as spark_layer
from spark_lance_index.transport import transport_for


def press_ctrl_c(after: float) -> None:
    time.sleep(after)
    os.kill(os.getpid(), signal.SIGINT)


def main(presses: int) -> None:
    spark_layer.QUIET_INTERRUPTS = True
    spark, _ = spark_layer.get_session("local[2]", "ctrl-c-probe")
    bad = 0
    for press in range(presses):
        interrupts._requested.clear()
        # from the broadcast and the job's submission to its running tasks
        threading.Thread(target=press_ctrl_c, args=(0.1 + 0.13 * (press % 7),), daemon=True).start()
        try:
            with spark_layer.job_group(spark, f"probe-{press}", "a job Ctrl-C stops"):  # as the pipeline's jobs
                transport_for(spark).map(list(range(4)), lambda x, shared: time.sleep(1.5) or x, [1, 2, 3],
                                         label="probe")
            print(press, "finished: the press was lost", flush=True)
            bad += 1
        except KeyboardInterrupt:
            print(press, "KeyboardInterrupt", flush=True)
        except Exception as e:
            print(press, f"replaced by {type(e).__name__}: {str(e)[:200]}", flush=True)
            bad += 1
        logging.disable(logging.NOTSET)
        assert spark.sparkContext.parallelize(range(3), 3).count() == 3  # the session still works
        time.sleep(0.3)  # past any resend that crossed the raise
    print(("ok" if not bad else "bad"), bad, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
