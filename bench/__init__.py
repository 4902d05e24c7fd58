"""Benchmarks of cdc_pipeline (``make bench``): reproducible scripts, not tests.

Every figure is a ratio against a baseline measured in the same run, on the same data, on the
same servers: capture against a bare mysql-replication loop (and ``mariadb-binlog -v`` /
``mysqlbinlog -v`` as the machine's reference), load against a bare pymongo ``insert_many``,
peak memory against the same bare loops, and latency against a bare binlog-to-MongoDB stream.
Entry point: ``python -m bench.run --help``.
"""
