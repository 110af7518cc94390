"""A Spark Connect server on 127.0.0.1 for the CLI tests: `python connect_server.py PORT`.

Prints READY once it listens and runs until killed. Its executors run this Python (with the
package), as a cluster's would have it installed.
"""

import os
import sys
import time

os.environ["PYSPARK_PYTHON"] = sys.executable

from pyspark import SparkConf, SparkContext  # noqa: E402

conf = (SparkConf().setMaster("local[2]").setAppName("connect-server-for-tests")
        .set("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
        .set("spark.connect.grpc.binding.address", "127.0.0.1")
        .set("spark.connect.grpc.binding.port", sys.argv[1])
        .set("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .set("spark.ui.enabled", "false"))
sc = SparkContext(conf=conf)
sc.setLogLevel("ERROR")
print("READY", flush=True)
while True:
    time.sleep(60)
