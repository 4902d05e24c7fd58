"""The statements of the DDL corpus, in scenes run one after another on one session (no tests
here; ``test_ddl_corpus_collector`` runs them).

Each scene starts with the corpus schemas dropped and created again. A line is a statement sent
as is and recorded in the corpus; ``~ `` marks a setup step (rows, session settings) that is run
but not recorded; ``mariadb: `` / ``mysql: `` limits a line to one flavor. Every recorded
statement must succeed on the flavors it runs on. Sources: every DDL the test suite, devtools
and bench run (with their schema names replaced by the corpus's), the forms reported in the
issue (quoting, comments, executable comments, odd names), and what real tools send: mysqldump
output, pt-online-schema-change and gh-ost table swaps, online ALTER options, partitions,
indexes, views, triggers, routines, events, accounts and grants.
"""

from __future__ import annotations

from dataclasses import dataclass

A = "ddl_corpus"
B = "ddl_corpus_b"
DOT = "ddl.corpus"
UPPER = "DDL_CORPUS"
SCHEMAS = (A, B, DOT, UPPER)
"""The corpus schemas: the truth is every base table in them."""

LONG = "t" + "_abcdefghijklmnopqrstuvwxyz0123456789" * 2
LONG = LONG[:64]


@dataclass(frozen=True)
class Scene:
    name: str
    statements: tuple[str, ...]
    database: str | None = A
    """The session's default schema when the scene starts (None: no default schema)."""


SUITE = Scene(
    "suite",
    (
        # cdc_pipeline_tests/, devtools/sample_workload.py, devtools/demo.py, bench/
        "CREATE TABLE t (id INT PRIMARY KEY)",
        "~ INSERT INTO t VALUES (1), (2)",
        "ALTER TABLE t ADD COLUMN a INT",
        "ALTER TABLE t DROP COLUMN a",
        "CREATE TABLE t_new (id INT PRIMARY KEY, v INT)",
        "~ INSERT INTO t_new VALUES (5, 5)",
        "RENAME TABLE t TO t_old, t_new TO t",
        "DROP TABLE IF EXISTS `a#old`",
        "CREATE TABLE a (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE `a#old` (id INT PRIMARY KEY, v INT)",
        "~ INSERT INTO a VALUES (1, 1)",
        "~ INSERT INTO `a#old` VALUES (1, 1)",
        "DROP TABLE IF EXISTS `a#old`",
        "CREATE TABLE `c--d` (id INT PRIMARY KEY)",
        "CREATE TABLE c (id INT PRIMARY KEY)",
        "~ INSERT INTO c VALUES (1)",
        "~ INSERT INTO `c--d` VALUES (1)",
        "DROP TABLE IF EXISTS `c--d`",
        f"CREATE TABLE `{B}`.a (id INT PRIMARY KEY, v INT)",
        f"CREATE TABLE `{B}`.e (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE e (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
        f"~ INSERT INTO `{B}`.a VALUES (1, 1)",
        f"~ INSERT INTO `{B}`.e VALUES (1, 1)",
        "~ INSERT INTO e VALUES (1, 1)",
        "~ INSERT INTO b VALUES (1, 1)",
        f"~ USE `{B}`",
        f"DROP TABLE `{A}`.b, e",
        f"DROP TABLE `{A}`.e, a",
        f"~ USE `{A}`",
        "/*!50001 TRUNCATE TABLE a */",
        "CREATE TABLE p (id INT PRIMARY KEY, v INT) PARTITION BY RANGE (id)"
        " (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE)",
        "~ INSERT INTO p VALUES (1, 1), (2, 2), (20, 20)",
        "ALTER TABLE p DROP PARTITION p0",
        "CREATE TABLE IF NOT EXISTS customers (id INT PRIMARY KEY, name VARCHAR(40),"
        " city VARCHAR(40))",
        "CREATE TABLE IF NOT EXISTS order_lines (order_id INT, line INT, sku VARCHAR(20),"
        " PRIMARY KEY (order_id, line))",
        "CREATE TABLE IF NOT EXISTS evolving (id INT PRIMARY KEY, v INT)",
        "~ INSERT INTO customers VALUES (1, 'ann', 'oslo'), (2, 'bob', NULL)",
        "~ INSERT INTO order_lines VALUES (1, 1, 'x'), (1, 2, 'y')",
        "~ INSERT INTO evolving VALUES (1, 1), (2, 2)",
        f"ALTER TABLE `{A}`.evolving ADD COLUMN note_1 VARCHAR(20) DEFAULT 'n1'",
        f"ALTER TABLE `{A}`.evolving RENAME COLUMN note_1 TO memo_1",
        f"ALTER TABLE `{A}`.evolving MODIFY COLUMN memo_1 VARCHAR(40)",
        f"ALTER TABLE `{A}`.evolving DROP COLUMN memo_1",
        f"ALTER TABLE `{A}`.evolving FORCE",
        f"ALTER TABLE `{A}`.customers ADD COLUMN tier VARCHAR(10)",
        "ALTER TABLE customers DROP COLUMN city",
        "ALTER TABLE customers RENAME COLUMN name TO full_name",
        "ALTER TABLE customers MODIFY COLUMN full_name VARCHAR(50)",
        "ALTER TABLE customers ADD COLUMN note VARCHAR(10)",
        "ALTER TABLE customers ADD COLUMN extra INT DEFAULT 5",
        "ALTER TABLE customers ADD UNIQUE KEY aa (id, tier)",
        f"RENAME TABLE `{A}`.customers TO `{A}`.renamed",
        f"TRUNCATE TABLE `{A}`.order_lines",
        "CREATE TABLE clash (`_id` INT PRIMARY KEY, `_cdc` VARCHAR(5), `_srcx` INT)",
        "CREATE TABLE nokey (x INT, y VARCHAR(10))",
        "~ INSERT INTO nokey VALUES (1, 'a')",
        "CREATE TABLE pairs (a INT, b VARCHAR(5), c INT, PRIMARY KEY (b, a))",
        "CREATE TABLE keyed (e ENUM('z','a') NOT NULL, ts TIMESTAMP(3) NOT NULL,"
        " PRIMARY KEY (e, ts))",
        "CREATE TABLE j (id INT PRIMARY KEY, j JSON)",
        "CREATE TABLE tenk (a INT, s VARCHAR(50), PRIMARY KEY (s(10), a))",
        "CREATE TABLE mem (a INT, b INT NOT NULL, UNIQUE KEY ub (b)) ENGINE=MEMORY",
        "CREATE TABLE gen (id INT PRIMARY KEY, a INT, v INT AS (a + 1) VIRTUAL,"
        " s INT AS (a * 2) STORED)",
        "CREATE TABLE emoji (id INT PRIMARY KEY, e ENUM('\N{GRINNING FACE}', 'a')"
        " CHARACTER SET utf8mb4)",
        "CREATE VIEW a_view AS SELECT id FROM a",
        f"CREATE VIEW `{A}`.v AS SELECT 1 AS one",
        "CREATE INDEX i ON pairs (c)",
        "DROP INDEX i ON pairs",
        "CREATE TABLE T (id INT PRIMARY KEY)",
        "~ INSERT INTO T VALUES (7)",
        "ALTER TABLE T ADD COLUMN a INT",
        "CREATE DATABASE IF NOT EXISTS `ddl_corpus_x` CHARACTER SET utf8mb4",
        "DROP DATABASE IF EXISTS `ddl_corpus_x`",
        "mariadb: CREATE TABLE sv (id INT PRIMARY KEY, a INT) WITH SYSTEM VERSIONING",
        "mariadb: CREATE TABLE net (id INT PRIMARY KEY, i6 INET6, u UUID, i4 INET4)",
        "mysql: CREATE TABLE vec (id INT PRIMARY KEY, v VECTOR(3))",
        "~ mysql: SET sql_generate_invisible_primary_key = ON",
        "mysql: CREATE TABLE gipk (a INT, b INT)",
        "~ mysql: SET sql_generate_invisible_primary_key = OFF",
    ),
)


TWO_TABLES = (
    "~ CREATE TABLE t (id INT PRIMARY KEY, v INT)",
    "~ CREATE TABLE u (id INT PRIMARY KEY, v INT)",
    "~ INSERT INTO t VALUES (1, 1), (2, NULL)",
    "~ INSERT INTO u VALUES (1, 10)",
)

QUOTING = Scene(
    "quoting",
    (
        *TWO_TABLES,
        "CREATE TABLE `c -- d` (id INT PRIMARY KEY)",
        "CREATE TABLE `a#b` (id INT PRIMARY KEY)",
        "CREATE TABLE `a/*b` (id INT PRIMARY KEY)",
        "CREATE TABLE `c*/` (id INT PRIMARY KEY)",
        "CREATE TABLE `we``ird` (id INT PRIMARY KEY)",
        "CREATE TABLE `b.c` (id INT PRIMARY KEY)",
        f"CREATE TABLE `{DOT}`.`c` (id INT PRIMARY KEY)",
        "CREATE TABLE price$ (id INT PRIMARY KEY)",
        "CREATE TABLE café (id INT PRIMARY KEY)",
        "CREATE TABLE _x (id INT PRIMARY KEY)",
        "CREATE TABLE `a|b` (id INT PRIMARY KEY)",
        "CREATE TABLE `a@b` (id INT PRIMARY KEY)",
        "CREATE TABLE `odd name` (id INT PRIMARY KEY)",
        "CREATE TABLE `表` (id INT PRIMARY KEY)",
        f"CREATE TABLE `{LONG}` (id INT PRIMARY KEY)",
        "CREATE TABLE `select` (id INT PRIMARY KEY)",
        "CREATE TABLE `order` (id INT PRIMARY KEY)",
        "CREATE TABLE status (id INT PRIMARY KEY)",
        "CREATE TABLE Tc (id INT PRIMARY KEY)",
        "CREATE TABLE tc (id INT PRIMARY KEY)",
        "CREATE TABLE 1t (id INT PRIMARY KEY)",
        "CREATE TABLE `a\\` (id INT PRIMARY KEY)",
        "CREATE TABLE `x'y` (id INT PRIMARY KEY)",
        'CREATE TABLE `x"y` (id INT PRIMARY KEY)',
        f"CREATE TABLE `{UPPER}`.t (id INT PRIMARY KEY)",
        *(
            f"~ INSERT INTO {name} VALUES (1), (2)"
            for name in (
                "`c -- d`",
                "`a#b`",
                "`a/*b`",
                "`c*/`",
                "`we``ird`",
                "`b.c`",
                f"`{DOT}`.`c`",
                "price$",
                "café",
                "_x",
                "`a|b`",
                "`a@b`",
                "`odd name`",
                "`表`",
                f"`{LONG}`",
                "`select`",
                "`order`",
                "status",
                "Tc",
                "tc",
                "`1t`",
                "`a\\`",
                "`x'y`",
                '`x"y`',
                f"`{UPPER}`.t",
            )
        ),
        "TRUNCATE TABLE `a#b`",
        "truncate `odd name`",
        "TRUNCATE `ddl.corpus`.`c`",
        "DROP TABLE `c -- d`",
        "DROP TABLE `a/*b`, `c*/`",
        "DROP TABLE `we``ird`",
        "DROP TABLE `b.c`",
        "DROP TABLE price$, café, _x",
        "ALTER TABLE `a|b` ADD COLUMN `x--y` INT",
        "RENAME TABLE `a@b` TO `a b`",
        "ALTER TABLE `a b` RENAME TO `日本`",
        f"TRUNCATE TABLE `{LONG}`",
        "DROP TABLE `select`, `order`",
        "TRUNCATE TABLE status",
        "TRUNCATE TABLE Tc",
        "ALTER TABLE tc ADD COLUMN w INT",
        "RENAME TABLE tc TO tC",
        "ALTER TABLE tC RENAME TO TC",
        f"TRUNCATE TABLE `{UPPER}`.t",
        "TRUNCATE TABLE 1t",
        "ALTER TABLE 1t ADD COLUMN w INT",
        "DROP TABLE 1t",
        "TRUNCATE TABLE `a\\`",
        "DROP TABLE `a\\`, t",
        "TRUNCATE TABLE `x'y`",
        'DROP TABLE `x"y`',
        "DROP TABLE`u`",
        f"DROP TABLE {A} . Tc",
        "ALTER TABLE `a#b` COMMENT 'ADD COLUMN x, DROP y'",
        "ALTER TABLE `a#b` ADD COLUMN s VARCHAR(10) DEFAULT ')', ADD INDEX (s)",
        "ALTER TABLE `a#b` ADD COLUMN q VARCHAR(10) DEFAULT 'it''s, DROP', DROP COLUMN s",
        "ALTER TABLE `a#b` ADD COLUMN r VARCHAR(10) DEFAULT 'x\\'', ADD INDEX (r)",
        "ALTER TABLE `a#b` COMMENT 'a\\\\', DROP COLUMN q",
        "ALTER TABLE `a#b` ADD INDEX `drop` (r)",
    ),
)

ANSI = Scene(
    "ansi_quotes",
    (
        *TWO_TABLES,
        "~ CREATE TABLE `a b` (id INT PRIMARY KEY)",
        '~ CREATE TABLE `we"ird` (id INT PRIMARY KEY)',
        '~ CREATE TABLE `s"` (id INT PRIMARY KEY)',
        "~ INSERT INTO `a b` VALUES (1)",
        '~ INSERT INTO `we"ird` VALUES (1)',
        '~ INSERT INTO `s"` VALUES (1)',
        "~ SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
        'TRUNCATE TABLE "a b"',
        'ALTER TABLE "t" ADD COLUMN "c" INT COMMENT \'DROP "t"\'',
        'DROP TABLE "we""ird"',
        'RENAME TABLE "u" TO "u2"',
        f'ALTER TABLE "{A}"."u2" RENAME TO "{B}"."u"',
        'DROP TABLE "s""", `a b`',
        "~ SET SESSION sql_mode = REPLACE(@@sql_mode, 'ANSI_QUOTES', '')",
        'ALTER TABLE t ADD COLUMN d VARCHAR(5) DEFAULT "x", DROP COLUMN c',
    ),
)

BACKSLASH = Scene(
    "no_backslash_escapes",
    (
        *TWO_TABLES,
        "~ SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
        "ALTER TABLE t COMMENT 'a\\', DROP COLUMN v",
        "ALTER TABLE u COMMENT 'b\\', ADD COLUMN w INT",
        "TRUNCATE TABLE u",
    ),
)

COMMENTS = Scene(
    "comments",
    (
        *TWO_TABLES,
        "~ CREATE TABLE d (id INT PRIMARY KEY)",
        "~ CREATE TABLE e (id INT PRIMARY KEY)",
        "~ CREATE TABLE f (id INT PRIMARY KEY)",
        "~ INSERT INTO d VALUES (1)",
        "~ INSERT INTO e VALUES (1)",
        "~ INSERT INTO f VALUES (1)",
        "/* first */ ALTER /* mid */ TABLE /* , DROP COLUMN v */ t ADD COLUMN c INT",
        "ALTER TABLE t DROP COLUMN c -- , ADD COLUMN z INT\n",
        "ALTER TABLE t ADD COLUMN c2 INT # , DROP COLUMN v",
        "# note\nTRUNCATE TABLE d",
        "-- note\nTRUNCATE TABLE e",
        "TRUNCATE /* DROP TABLE t */ f",
        "DROP TABLE d -- , t\n",
        "DROP TABLE e # , t",
        "DROP /* TABLE t */ TABLE f",
        "ALTER TABLE u ADD COLUMN m INT DEFAULT (1--1)",
        "ALTER TABLE u ADD COLUMN `#` INT, ADD COLUMN `--` INT",
        "ALTER TABLE u ADD COLUMN n VARCHAR(9) DEFAULT '/*', ADD COLUMN o INT",
        "RENAME /* TABLE t TO z, */ TABLE u TO u2",
        "DROP TABLE u2 /* , t */",
    ),
)

EXECUTABLE = Scene(
    "executable_comments",
    (
        *TWO_TABLES,
        "~ CREATE TABLE d (id INT PRIMARY KEY)",
        "~ CREATE TABLE e (id INT PRIMARY KEY)",
        "~ CREATE TABLE f (id INT PRIMARY KEY)",
        "~ INSERT INTO d VALUES (1)",
        "~ INSERT INTO e VALUES (1)",
        "~ INSERT INTO f VALUES (1)",
        "/*!50001 TRUNCATE TABLE d */",
        "/*!40101 DROP TABLE IF EXISTS `d` */",
        "DROP TABLE /*!50001 `e` */",
        "DROP TABLE f /*!99999 , u */",
        "ALTER TABLE t /*!80000 ADD COLUMN c INT */",
        "ALTER TABLE t ADD COLUMN c2 INT /*!99999 , DROP COLUMN v */",
        "/*!99999 ALTER TABLE t DROP COLUMN v, */ TRUNCATE TABLE t",
        "ALTER TABLE u ADD COLUMN m INT /*M! , ADD COLUMN mm INT */",
        "/*M!100100 TRUNCATE TABLE u */",
        "mariadb: /*M!999999 TRUNCATE TABLE t */",
        "mariadb: ALTER TABLE u /*!100100 ADD COLUMN six INT */",
        "mariadb: ALTER TABLE u ADD COLUMN seven INT /*M!999999 , DROP COLUMN v */",
        "/*! DROP TABLE u */",
    ),
)

DUMP = Scene(
    "mysqldump",
    (
        "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */",
        "/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */",
        "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */",
        "/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */",
        "DROP TABLE IF EXISTS `t`",
        "/*!40101 SET @saved_cs_client     = @@character_set_client */",
        "/*!50503 SET character_set_client = utf8mb4 */",
        "CREATE TABLE `t` (\n  `id` int NOT NULL,\n  `v` varchar(20) DEFAULT NULL,\n"
        "  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "mysql: CREATE TABLE `m` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n)"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci",
        "mariadb: CREATE TABLE `m` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n)"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci",
        "/*!40101 SET character_set_client = @saved_cs_client */",
        "/*!40000 ALTER TABLE `t` DISABLE KEYS */",
        "~ INSERT INTO `t` VALUES (1,'a'),(2,'b')",
        "/*!40000 ALTER TABLE `t` ENABLE KEYS */",
        "CREATE TABLE `p` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n)"
        " /*!50100 PARTITION BY RANGE (`id`)\n(PARTITION p0 VALUES LESS THAN (10) ENGINE = InnoDB,"
        "\n PARTITION p1 VALUES LESS THAN MAXVALUE ENGINE = InnoDB) */",
        "~ INSERT INTO p VALUES (1), (20)",
        "/*!50001 DROP VIEW IF EXISTS `v`*/",
        "/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`127.0.0.1`"
        " SQL SECURITY DEFINER */\n/*!50001 VIEW `v` AS select `t`.`id` AS `id` from `t` */",
        "/*!50001 DROP TABLE IF EXISTS `v2`*/",
        "/*!50001 CREATE VIEW `v2` AS SELECT 1 AS `one` */",
        "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */",
        "/*!40000 DROP DATABASE IF EXISTS `ddl_corpus_x`*/",
        "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `ddl_corpus_x`"
        " /*!40100 DEFAULT CHARACTER SET utf8mb4 */",
        "DROP DATABASE `ddl_corpus_x`",
    ),
)

ONLINE_SCHEMA_CHANGE = Scene(
    "online_schema_change",
    (
        *TWO_TABLES,
        # pt-online-schema-change
        f"CREATE TABLE `{A}`.`_t_new` LIKE `{A}`.`t`",
        f"ALTER TABLE `{A}`.`_t_new` ADD COLUMN c INT",
        f"CREATE TRIGGER `pt_osc_{A}_t_ins` AFTER INSERT ON `{A}`.`t` FOR EACH ROW"
        f" REPLACE INTO `{A}`.`_t_new` (`id`, `v`) VALUES (NEW.`id`, NEW.`v`)",
        f"CREATE TRIGGER `pt_osc_{A}_t_del` AFTER DELETE ON `{A}`.`t` FOR EACH ROW"
        f" DELETE IGNORE FROM `{A}`.`_t_new` WHERE `{A}`.`_t_new`.`id` <=> OLD.`id`",
        f"~ INSERT LOW_PRIORITY IGNORE INTO `{A}`.`_t_new` (`id`, `v`)"
        f" SELECT `id`, `v` FROM `{A}`.`t` LOCK IN SHARE MODE",
        f"ANALYZE TABLE `{A}`.`_t_new`",
        f"RENAME TABLE `{A}`.`t` TO `{A}`.`_t_old`, `{A}`.`_t_new` TO `{A}`.`t`",
        f"DROP TABLE IF EXISTS `{A}`.`_t_old`",
        f"DROP TRIGGER IF EXISTS `{A}`.`pt_osc_{A}_t_ins`",
        f"DROP TRIGGER IF EXISTS `{A}`.`pt_osc_{A}_t_del`",
        # gh-ost
        f"create /* gh-ost */ table `{A}`.`_u_gho` like `{A}`.`u`",
        f"alter /* gh-ost */ table `{A}`.`_u_gho` add column w int",
        f"create /* gh-ost */ table `{A}`.`_u_ghc` (\n id bigint auto_increment,"
        "\n last_update timestamp not null DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,"
        "\n hint varchar(64) charset ascii not null,\n value varchar(4096) charset ascii not null,"
        "\n primary key(id),\n unique key hint_uidx(hint)\n) auto_increment=256",
        f"~ insert /* gh-ost */ ignore into `{A}`.`_u_gho` (`id`, `v`)"
        f" (select `id`, `v` from `{A}`.`u` force index (`PRIMARY`))",
        f"create /* gh-ost */ table `{A}`.`_u_del` (\n id int auto_increment primary key\n)"
        " engine=InnoDB comment='ghost-cut-over-sentry'",
        f"drop /* gh-ost */ table if exists `{A}`.`_u_del`",
        f"rename /* gh-ost */ table `{A}`.`u` to `{A}`.`_u_del`, `{A}`.`_u_gho` to `{A}`.`u`",
        f"drop /* gh-ost */ table if exists `{A}`.`_u_ghc`",
        f"drop /* gh-ost */ table if exists `{A}`.`_u_del`",
        # a three-way swap and a chain
        "~ CREATE TABLE x (id INT PRIMARY KEY)",
        "~ INSERT INTO x VALUES (1), (2), (3)",
        "RENAME TABLE t TO tmp, x TO t, tmp TO x",
        "RENAME TABLE x TO y, y TO z",
        f"RENAME TABLE z TO `{B}`.z",
        f"ALTER TABLE `{B}`.z RENAME `{A}`.z2",
        "ALTER TABLE z2 RENAME AS z3",
    ),
)

ALTERS = Scene(
    "alter_clauses",
    (
        *TWO_TABLES,
        "~ CREATE TABLE k (id INT NOT NULL, v INT, w INT)",
        "~ INSERT INTO k VALUES (1, 1, 1), (2, 2, 2)",
        "ALTER TABLE t ADD COLUMN a INT, ALGORITHM=INPLACE, LOCK=NONE",
        "ALTER TABLE t ADD INDEX iv (v), ALGORITHM=INPLACE, LOCK=NONE",
        "ALTER TABLE t ALGORITHM=INSTANT, ADD COLUMN x INT AFTER id",
        "ALTER TABLE t ADD COLUMN (y INT, z INT)",
        "ALTER TABLE t DROP COLUMN y, DROP COLUMN z, DROP INDEX iv",
        "ALTER TABLE t CHANGE COLUMN a b BIGINT, ALGORITHM=COPY",
        "ALTER TABLE t MODIFY v BIGINT, ADD INDEX (v), COMMENT='x'",
        "~ UPDATE t SET v = 0 WHERE v IS NULL",
        "ALTER TABLE t MODIFY v INT NOT NULL",
        "ALTER TABLE t ALTER COLUMN v SET DEFAULT 3",
        "ALTER TABLE t ALTER v DROP DEFAULT",
        "ALTER TABLE t RENAME INDEX v TO v2",
        "ALTER TABLE t RENAME KEY v2 TO v3",
        "ALTER TABLE t ENGINE=InnoDB, FORCE",
        "ALTER TABLE t ROW_FORMAT=DYNAMIC",
        "ALTER TABLE t AUTO_INCREMENT = 100",
        "ALTER TABLE t CHARACTER SET latin1",
        "ALTER TABLE t ADD COLUMN s VARCHAR(10) DEFAULT 'é'",
        "ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4",
        "ALTER TABLE t ORDER BY v",
        "ALTER TABLE t ADD CONSTRAINT ck CHECK (v >= 0)",
        "mysql: ALTER TABLE t DROP CHECK ck",
        "mariadb: ALTER TABLE t DROP CONSTRAINT ck",
        "ALTER TABLE t ADD COLUMN g INT AS (v + 1) VIRTUAL",
        "ALTER TABLE t ADD COLUMN `drop` INT, ADD COLUMN `rename` INT",
        "ALTER TABLE t DROP `drop`, DROP `rename`",
        "ALTER TABLE u ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES t (id)",
        "ALTER TABLE u DROP FOREIGN KEY fk",
        "ALTER TABLE t ADD UNIQUE KEY uk (id, s), ADD FULLTEXT ft (s)",
        "ALTER TABLE t DROP INDEX uk, DROP INDEX ft",
        "ALTER TABLE k ADD PRIMARY KEY (id)",
        "ALTER TABLE k DROP PRIMARY KEY, ADD PRIMARY KEY (id, v)",
        "ALTER TABLE k DROP INDEX `PRIMARY`",
        "ALTER TABLE k ADD CONSTRAINT pk PRIMARY KEY (id)",
        "DROP INDEX `PRIMARY` ON k",
        "CREATE UNIQUE INDEX uw ON k (w)",
        "ALTER TABLE k ADD PRIMARY KEY (w), DROP INDEX uw",
        "CREATE INDEX iw ON k (w) ALGORITHM=INPLACE LOCK=NONE",
        "mysql: DROP INDEX iw ON k ALGORITHM=INPLACE LOCK=NONE",
        "mariadb: DROP INDEX iw ON k",
        "ALTER TABLE k RENAME COLUMN v TO vv, RENAME TO k2",
        "ALTER TABLE k2 ADD COLUMN c INT DEFAULT 1, RENAME TO k",
        "ALTER TABLE u RENAME TO u2, ADD COLUMN c INT DEFAULT 7",
        "ALTER TABLE u2 RENAME TO u",
        "ALTER TABLE u RENAME COLUMN c TO cc, ALTER COLUMN v SET DEFAULT 8",
        "mysql: ALTER TABLE u ALTER COLUMN cc SET INVISIBLE",
        "mysql: ALTER TABLE u ADD INDEX iv (v)",
        "mysql: ALTER TABLE u ALTER INDEX iv INVISIBLE",
        "mariadb: ALTER TABLE u MODIFY cc INT INVISIBLE",
        "mariadb: ALTER ONLINE TABLE u ADD INDEX icc (cc)",
        "mariadb: ALTER ONLINE IGNORE TABLE u DROP cc",
        "mariadb: ALTER TABLE IF EXISTS u DROP COLUMN IF EXISTS nothere",
        "mariadb: ALTER TABLE u ADD IF NOT EXISTS v INT",
        "mariadb: ALTER TABLE u ADD COLUMN IF NOT EXISTS w2 INT DEFAULT 2",
        "mariadb: ALTER TABLE u WAIT 10 DROP COLUMN w2",
        "mariadb: ALTER TABLE u NOWAIT ADD INDEX (v)",
        "mariadb: ALTER TABLE IF EXISTS nothere ADD COLUMN c INT",
        "mariadb: ALTER TABLE u ENGINE=Aria",
        "mariadb: ALTER TABLE u ENGINE=InnoDB",
        "mariadb: ALTER TABLE u ADD SYSTEM VERSIONING",
        "mariadb: ALTER TABLE u DROP SYSTEM VERSIONING",
        "mysql: ALTER TABLE u DROP COLUMN cc",
        "ALTER TABLE u ADD COLUMN w3 INT FIRST",
        "ALTER TABLE u MODIFY w3 INT AFTER v",
        "ALTER TABLE u DROP COLUMN w3, ADD COLUMN w3 INT",
    ),
)

PARTITIONS = Scene(
    "partitions",
    (
        "CREATE TABLE p (id INT PRIMARY KEY, v INT) PARTITION BY RANGE (id)"
        " (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20),"
        " PARTITION p2 VALUES LESS THAN MAXVALUE)",
        "~ INSERT INTO p VALUES (1, 1), (11, 11), (12, 12), (21, 21)",
        "CREATE TABLE q (id INT PRIMARY KEY, v INT)",
        "~ INSERT INTO q VALUES (5, 5)",
        "ALTER TABLE p TRUNCATE PARTITION p1",
        "ALTER TABLE p EXCHANGE PARTITION p0 WITH TABLE q",
        "ALTER TABLE p REORGANIZE PARTITION p2 INTO"
        " (PARTITION p2 VALUES LESS THAN (30), PARTITION p3 VALUES LESS THAN MAXVALUE)",
        "ALTER TABLE p ANALYZE PARTITION p2",
        "~ INSERT INTO p VALUES (35, 35), (45, 45)",
        "ALTER TABLE p DROP PARTITION p3",
        "ALTER TABLE p ADD PARTITION (PARTITION p9 VALUES LESS THAN MAXVALUE)",
        "~ INSERT INTO p VALUES (50, 50)",
        "ALTER TABLE p DROP PARTITION p1, p2",
        "ALTER TABLE p REBUILD PARTITION p0",
        "ALTER TABLE p PARTITION BY HASH (id) PARTITIONS 3",
        "ALTER TABLE p COALESCE PARTITION 1",
        "ALTER TABLE p ADD PARTITION PARTITIONS 2",
        "ALTER TABLE p REMOVE PARTITIONING",
        "CREATE TABLE h (id INT PRIMARY KEY) PARTITION BY KEY (id) PARTITIONS 2",
        "~ INSERT INTO h VALUES (1), (2), (3)",
        "ALTER TABLE h TRUNCATE PARTITION ALL",
        f"CREATE TABLE `{B}`.r (id INT PRIMARY KEY, v INT) PARTITION BY LIST (id)"
        " (PARTITION a VALUES IN (1, 2), PARTITION b VALUES IN (3, 4))",
        f"~ INSERT INTO `{B}`.r VALUES (1, 1), (3, 3)",
        f"CREATE TABLE `{B}`.r2 (id INT PRIMARY KEY, v INT)",
        f"mysql: ALTER TABLE `{B}`.r EXCHANGE PARTITION b WITH TABLE `{B}`.r2 WITHOUT VALIDATION",
        f"mariadb: ALTER TABLE `{B}`.r EXCHANGE PARTITION b WITH TABLE `{B}`.r2",
        "mariadb: ALTER TABLE `ddl_corpus_b`.r CONVERT PARTITION a TO TABLE `ddl_corpus_b`.ra",
        "mariadb: ALTER TABLE `ddl_corpus_b`.r CONVERT TABLE `ddl_corpus_b`.ra"
        " TO PARTITION a VALUES IN (1, 2)",
    ),
)

CREATES = Scene(
    "create_variants",
    (
        *TWO_TABLES,
        "CREATE TABLE t2 LIKE t",
        "CREATE TABLE t3 AS SELECT * FROM t",
        "CREATE TABLE t4 (extra INT) SELECT id, v FROM t",
        f"CREATE TABLE `{B}`.t5 SELECT * FROM `{A}`.u",
        "CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS u LIKE t",
        "CREATE TABLE IF NOT EXISTS t3 SELECT 9 AS id, 9 AS v",
        "CREATE TABLE t6 (PRIMARY KEY (id)) SELECT id FROM u",
        "CREATE TEMPORARY TABLE tmp (id INT)",
        "~ INSERT INTO tmp VALUES (1)",
        "DROP TABLE tmp, t2",
        "CREATE TEMPORARY TABLE t (id INT)",
        "TRUNCATE TABLE t",
        "ALTER TABLE t ADD COLUMN c INT",
        "DROP TABLE t",
        "DROP TEMPORARY TABLE IF EXISTS t",
        "CREATE TEMPORARY TABLE tmp2 LIKE u",
        "DROP TABLE IF EXISTS tmp2, t4",
        "DROP TABLE t RESTRICT",
        "DROP TABLES t3, t6 CASCADE",
        "CREATE TABLE `t` (id int)",
        "DROP TABLE IF EXISTS t, nothere, `ddl_corpus_b`.t5",
        "mariadb: CREATE OR REPLACE TABLE u (id INT PRIMARY KEY)",
        "mariadb: CREATE OR REPLACE TABLE u2 LIKE u",
        "~ mariadb: INSERT INTO u VALUES (1), (2)",
        "~ mariadb: INSERT INTO u2 VALUES (1), (2)",
        "mariadb: CREATE OR REPLACE TABLE u2 SELECT 5 AS id",
        "mariadb: CREATE OR REPLACE TABLE u LIKE u2",
        "mariadb: CREATE OR REPLACE TEMPORARY TABLE u (id INT)",
        "mariadb: DROP TABLE IF EXISTS u WAIT 5",
        "mariadb: DROP TABLE IF EXISTS u NOWAIT",
        "mariadb: RENAME TABLE IF EXISTS u2 WAIT 3 TO u3, nothere NOWAIT TO n2",
        "mariadb: TRUNCATE TABLE u3 WAIT 1",
        "mariadb: CREATE TABLE sv (id INT PRIMARY KEY) WITH SYSTEM VERSIONING",
        "mariadb: CREATE SEQUENCE seq",
        "mariadb: DROP SEQUENCE seq",
        "mysql: CREATE TABLE u2 (id INT PRIMARY KEY) START TRANSACTION",
        "mysql: COMMIT",
        "mysql: DROP TABLE u",
    ),
)

OBJECTS = Scene(
    "objects",
    (
        *TWO_TABLES,
        "CREATE VIEW v AS SELECT id FROM t",
        "CREATE OR REPLACE VIEW v AS SELECT id, v FROM t",
        "ALTER VIEW v AS SELECT id FROM u",
        "RENAME TABLE v TO w",
        "DROP VIEW w",
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.v = 1",
        "DROP TRIGGER tr",
        "CREATE PROCEDURE pr() BEGIN DROP TABLE IF EXISTS u; END",
        "CREATE FUNCTION fn() RETURNS INT DETERMINISTIC RETURN 1",
        "CALL pr()",
        "DROP PROCEDURE pr",
        "DROP FUNCTION fn",
        "CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO TRUNCATE TABLE t",
        "ALTER EVENT ev DISABLE",
        "DROP EVENT ev",
        "OPTIMIZE TABLE t",
        "ANALYZE TABLE t",
        "REPAIR TABLE t",
        "~ CREATE TABLE u (id INT PRIMARY KEY)",
        "~ INSERT INTO u VALUES (3)",
        "CREATE INDEX iv ON t (v)",
        "CREATE UNIQUE INDEX ui ON u (id)",
        "DROP INDEX ui ON u",
        "DROP INDEX iv ON t",
        "ALTER DATABASE `ddl_corpus` CHARACTER SET utf8mb4",
        "CREATE SCHEMA ddl_corpus_y",
        "DROP SCHEMA IF EXISTS ddl_corpus_y",
        "FLUSH TABLES",
        "~ CREATE PROCEDURE pt() BEGIN TRUNCATE TABLE t; ALTER TABLE u ADD COLUMN w INT; END",
        "CALL pt()",
        "CREATE TRIGGER td AFTER DELETE ON t FOR EACH ROW DELETE FROM u WHERE id = OLD.id",
        "DROP TRIGGER IF EXISTS td",
    ),
)

ACCOUNTS = Scene(
    "accounts",
    (
        *TWO_TABLES,
        # Left over if an earlier run stopped half way.
        "~ DROP USER IF EXISTS 'ddl_corpus_u'@'127.0.0.1', 'ddl_corpus_v'@'127.0.0.1'",
        "~ DROP ROLE IF EXISTS ddl_corpus_role",
        "CREATE USER 'ddl_corpus_u'@'127.0.0.1' IDENTIFIED BY 'pw'",
        "GRANT SELECT ON ddl_corpus.t TO 'ddl_corpus_u'@'127.0.0.1'",
        "GRANT DROP, ALTER ON `ddl_corpus`.* TO 'ddl_corpus_u'@'127.0.0.1'",
        "REVOKE DROP ON `ddl_corpus`.* FROM 'ddl_corpus_u'@'127.0.0.1'",
        "ALTER USER 'ddl_corpus_u'@'127.0.0.1' IDENTIFIED BY 'pw2'",
        "RENAME USER 'ddl_corpus_u'@'127.0.0.1' TO 'ddl_corpus_v'@'127.0.0.1'",
        "CREATE ROLE ddl_corpus_role",
        "GRANT ddl_corpus_role TO 'ddl_corpus_v'@'127.0.0.1'",
        "DROP ROLE ddl_corpus_role",
        "DROP USER IF EXISTS 'ddl_corpus_v'@'127.0.0.1'",
    ),
)

NO_DEFAULT = Scene(
    "no_default_schema",
    (
        f"CREATE TABLE `{A}`.t (id INT PRIMARY KEY, v INT)",
        f"CREATE TABLE `{B}`.t (id INT PRIMARY KEY, v INT)",
        f"CREATE TABLE `{UPPER}`.t (id INT PRIMARY KEY)",
        f"~ INSERT INTO `{A}`.t VALUES (1, 1)",
        f"~ INSERT INTO `{B}`.t VALUES (1, 1)",
        f"~ INSERT INTO `{UPPER}`.t VALUES (1)",
        f"TRUNCATE TABLE `{UPPER}`.t",
        f"ALTER TABLE `{B}`.t ADD COLUMN w INT",
        f"RENAME TABLE `{A}`.t TO `{B}`.t2",
        f"DROP TABLE `{B}`.t2, {B}.t",
        f"DROP TABLE IF EXISTS `{A}`.t",
    ),
    database=None,
)

DROP_DATABASE = Scene(
    "drop_database",
    (
        f"CREATE TABLE `{B}`.t (id INT PRIMARY KEY)",
        f"~ INSERT INTO `{B}`.t VALUES (1)",
        f"DROP DATABASE `{B}`",
        f"CREATE DATABASE `{B}`",
    ),
)

SCENES: tuple[Scene, ...] = (
    SUITE,
    QUOTING,
    ANSI,
    BACKSLASH,
    COMMENTS,
    EXECUTABLE,
    DUMP,
    ONLINE_SCHEMA_CHANGE,
    ALTERS,
    PARTITIONS,
    CREATES,
    OBJECTS,
    ACCOUNTS,
    NO_DEFAULT,
    DROP_DATABASE,
)
