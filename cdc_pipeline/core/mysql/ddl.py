"""Recognise the DDL statements the loader acts on, and the tables they touch.

Only the statements with an effect on the mirror collections are classified (TRUNCATE, DROP
TABLE, RENAME TABLE, ALTER TABLE, CREATE TABLE); everything else is ``other`` and is still
recorded in the DDL history. Invariant: classification never raises; a statement it cannot
parse is ``other`` with no targets.

The statement is read as MySQL reads it, by sqlglot's MySQL tokenizer: backquoted names (with
doubled backquotes), strings, ``#``, ``-- `` and ``/* */`` comments. Two things it does not do
are done here: the content of an executable comment (``/*!50001 … */``, and ``/*M! … */`` on
MariaDB) is part of the statement, so it is tokenized in place; and a statement that starts
with ``RENAME`` or ``REPLACE`` is tokenized like any other (sqlglot keeps the rest of such a
"command" as one string). With ``ansi_quotes`` (the session's ``sql_mode``), ``"x"`` is a name.
A statement that does not tokenize with backslash escapes in strings was run with
``NO_BACKSLASH_ESCAPES`` (the server logged it, so it parsed): it is read again without them.

``cdc_pipeline_tests/core/mysql/ddl_corpus.json`` holds what a real MariaDB and MySQL 9.7 wrote
to the binlog for a few hundred statements, with what really happened to the tables; its test
checks that the loader's actions on this module's answers leave the mirrors equal to the source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import TokenType

from cdc_pipeline.core.images import decode_document, encode_image


class _Tokenizer(MySQL.Tokenizer):
    COMMANDS: ClassVar = MySQL.Tokenizer.COMMANDS - {TokenType.RENAME, TokenType.REPLACE}


class _AnsiTokenizer(_Tokenizer):
    QUOTES: ClassVar = ["'"]
    IDENTIFIERS: ClassVar = ["`", '"']


class _RawTokenizer(_Tokenizer):
    """``NO_BACKSLASH_ESCAPES``: a backslash in a string is just a character."""

    STRING_ESCAPES: ClassVar = ["'", '"']


class _AnsiRawTokenizer(_AnsiTokenizer):
    STRING_ESCAPES: ClassVar = ["'"]


_TOKENIZERS = {
    (False, False): _Tokenizer,
    (True, False): _AnsiTokenizer,
    (False, True): _RawTokenizer,
    (True, True): _AnsiRawTokenizer,
}


@dataclass(frozen=True)
class _Token:
    kind: str
    """``name`` (a quoted identifier), ``word`` (a bare word), ``string`` or ``punct``."""
    text: str
    number: bool = field(default=False, compare=False)
    """A numeric literal as written (not a hex or bit literal, which sqlglot also reads)."""

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""

    @property
    def is_name(self) -> bool:
        return self.kind in ("name", "word")


_WORD = re.compile(r"[\w$]+")
_STRINGS = {TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.RAW_STRING}
_EXECUTABLE = re.compile(r"/\*(M?)!(?:\d{5,6})?(.*?)\*/", re.S)
_GAP_COMMENT = re.compile(r"#[^\n]*|--(?:[ \t\r\n][^\n]*|$)|/\*.*?\*/", re.S)


def _tokens(
    statement: str, mariadb: bool, ansi_quotes: bool, raw_strings: bool = False
) -> list[_Token]:
    """The statement's tokens, executable comments' content included where it stood.

    The MySQL dialect is what lets a bare name start with a digit (``1t``)."""
    tokenizer = _TOKENIZERS[ansi_quotes, raw_strings](dialect=MySQL)
    raw = tokenizer.tokenize(statement)
    out: list[_Token] = []
    position = 0
    for token in raw:
        out.extend(
            _executable(statement[position : token.start], mariadb, ansi_quotes, raw_strings)
        )
        position = token.end + 1
        if token.token_type == TokenType.IDENTIFIER:
            out.append(_Token("name", token.text))
        elif token.token_type in _STRINGS:
            out.append(_Token("string", token.text))
        elif all(_WORD.fullmatch(part) for part in token.text.split()):
            # One word, or a keyword sqlglot reads as one token ("PRIMARY KEY"): word by word.
            number = token.token_type == TokenType.NUMBER
            out.extend(_Token("word", part, number) for part in token.text.split())
        else:
            out.append(_Token("punct", token.text))
    out.extend(_executable(statement[position:], mariadb, ansi_quotes, raw_strings))
    return out


def _executable(gap: str, mariadb: bool, ansi_quotes: bool, raw_strings: bool) -> list[_Token]:
    """Tokens of the executable comments in the text between two tokens (only whitespace and
    comments can be there); a ``-- `` or ``#`` comment hides what follows it on its line."""
    out: list[_Token] = []
    for comment in _GAP_COMMENT.finditer(gap):
        executable = _EXECUTABLE.fullmatch(comment.group(0))
        if executable and (mariadb or not executable.group(1)):
            out.extend(_tokens(executable.group(2), mariadb, ansi_quotes, raw_strings))
    return out


@dataclass(frozen=True)
class DdlStatement:
    """What a DDL statement does to which tables: ``targets`` are (schema, table) pairs; for a
    rename, ``renames`` maps each old (schema, table) to its new name, in statement order.
    ``rebuilds`` lists the tables (after any rename) whose existing rows the statement rewrites
    without row events in the binlog (column or key changes, dropped, truncated or exchanged
    partitions, a character set conversion), and the table MySQL's ``CREATE TABLE … SELECT``
    fills (logged as ``CREATE TABLE … START TRANSACTION`` with its rows after it, which
    ``core.mysql.binlog`` reads as a finished DDL transaction, dropping the rows): their
    mirrors must be read again."""

    kind: str
    targets: tuple[tuple[str, str], ...]
    renames: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = ()
    rebuilds: tuple[tuple[str, str], ...] = ()
    column_ops: tuple[tuple[str, ...], ...] = ()
    """For an ALTER whose every row-rewriting clause could be applied to the mirror in place:
    ``("drop", c)``, ``("rename", a, b)``, ``("add_null", c)`` (a nullable column with no
    default, so NULL in every row), ``("add_int", c, "5")`` and ``("add_text", c, "x")`` (a
    constant default every row gets; ``_constant_default``). The loader still rebuilds when a
    named column is or was part of the key (``load.mirror_ddl``)."""


_OTHER = DdlStatement("other", ())


class _Reader:
    def __init__(self, tokens: list[_Token], default_schema: str) -> None:
        self.tokens = [token for token in tokens if token.text != ";" or token.kind != "punct"]
        self.at = 0
        self.default_schema = default_schema

    def peek(self, ahead: int = 0) -> _Token | None:
        index = self.at + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def word(self, *words: str) -> bool:
        """Consume the next token if it is one of ``words``."""
        token = self.peek()
        if token is not None and token.upper in words:
            self.at += 1
            return True
        return False

    def words(self, *sequence: str) -> bool:
        """Consume ``sequence`` if the next tokens are exactly it."""
        for ahead, word in enumerate(sequence):
            token = self.peek(ahead)
            if token is None or token.upper != word:
                return False
        self.at += len(sequence)
        return True

    def punct(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == text:
            self.at += 1
            return True
        return False

    def table(self) -> tuple[str, str]:
        """A table name, qualified or not; raises ``_Unparsed`` if there is none."""
        first = self.peek()
        if first is None or not first.is_name:
            raise _Unparsed
        self.at += 1
        if self.punct("."):
            second = self.peek()
            if second is None or not second.is_name:
                raise _Unparsed
            self.at += 1
            return first.text, second.text
        return self.default_schema, first.text

    def tables(self) -> tuple[tuple[str, str], ...]:
        names = [self.table()]
        while self.punct(","):
            names.append(self.table())
        return tuple(names)

    def lock_wait(self) -> None:
        """Skip MariaDB's ``WAIT n`` / ``NOWAIT`` after a table name."""
        if self.word("NOWAIT"):
            return
        token = self.peek()
        if token is not None and token.upper == "WAIT" and self.peek(1) is not None:
            self.at += 2

    def rest(self) -> list[_Token]:
        return self.tokens[self.at :]


class _Unparsed(Exception):
    pass


def classify_ddl(
    statement: str,
    default_schema: str,
    *,
    mariadb: bool = True,
    ansi_quotes: bool = False,
    no_backslash_escapes: bool | None = None,
) -> DdlStatement:
    """Classify one statement; ``default_schema`` qualifies unqualified table names.

    ``mariadb``: whether ``/*M! … */`` comments are executed (MariaDB) or ignored (MySQL).
    ``no_backslash_escapes``: the session's NO_BACKSLASH_ESCAPES (``None``: not known, a row
    captured before it was kept). Without it, a statement that does not tokenize with escapes
    is read again without them (it can only have been logged so under that mode).
    """
    try:
        if no_backslash_escapes:
            tokens = _tokens(statement, mariadb, ansi_quotes, raw_strings=True)
        else:
            try:
                tokens = _tokens(statement, mariadb, ansi_quotes)
            except SqlglotError:
                # Only NO_BACKSLASH_ESCAPES makes a logged statement end a string at "\'".
                tokens = _tokens(statement, mariadb, ansi_quotes, raw_strings=True)
        return _classify(_Reader(tokens, default_schema))
    except (_Unparsed, SqlglotError, IndexError, ValueError):
        return _OTHER


def _classify(read: _Reader) -> DdlStatement:
    if read.word("TRUNCATE"):
        read.word("TABLE")
        return DdlStatement("truncate", (read.table(),))
    if read.word("DROP"):
        if read.word("INDEX") and _is_primary(read.peek()):
            read.at += 1
            if not read.word("ON"):
                return _OTHER
            table = read.table()  # DROP INDEX `PRIMARY` ON t drops the primary key
            return DdlStatement("alter_table", (table,), (), (table,))
        if read.word("DATABASE", "SCHEMA"):
            read.words("IF", "EXISTS")
            name = read.peek()
            if name is None or not name.is_name:
                return _OTHER
            # Every table of the schema goes; the statement names none of them, so the loader
            # drops the mirrors ``cdc_collections`` records for it (target table "").
            return DdlStatement("drop_database", ((name.text, ""),))
        temporary = read.word("TEMPORARY")
        if not read.word("TABLE", "TABLES"):
            return _OTHER
        read.words("IF", "EXISTS")
        targets = read.tables()
        # A temporary table's rows are never in a row-based binlog, and it hides, not drops,
        # a real table of the same name.
        return DdlStatement("drop_temporary" if temporary else "drop_table", targets)
    if read.word("RENAME"):
        if not read.word("TABLE", "TABLES"):
            return _OTHER
        read.words("IF", "EXISTS")
        renames = [_renamed(read)]
        while read.punct(","):
            renames.append(_renamed(read))
        return DdlStatement("rename_table", tuple(old for old, _ in renames), tuple(renames))
    if read.word("ALTER"):
        while read.word("ONLINE", "OFFLINE", "IGNORE"):
            pass
        if not read.word("TABLE"):
            return _OTHER
        read.words("IF", "EXISTS")
        table = read.table()
        read.lock_wait()
        return _alter(table, read)
    if read.word("CREATE"):
        replace = read.words("OR", "REPLACE")
        temporary = read.word("TEMPORARY")
        if not read.word("TABLE"):
            return _OTHER
        read.words("IF", "NOT", "EXISTS")
        target = read.table()
        if temporary:
            return DdlStatement("create_temporary", (target,))
        # MySQL logs CREATE TABLE … SELECT as the new table's definition with START
        # TRANSACTION, its rows in the same transaction: read the table from the source.
        selected = [token.upper for token in read.rest()[-2:]] == ["START", "TRANSACTION"]
        rebuilds = (target,) if selected else ()
        # MariaDB's CREATE OR REPLACE drops the table first: its old rows go with no row event.
        return DdlStatement("replace_table" if replace else "create_table", (target,), (), rebuilds)
    return _OTHER


def _renamed(read: _Reader) -> tuple[tuple[str, str], tuple[str, str]]:
    """``old [WAIT n | NOWAIT] TO new``."""
    old = read.table()
    read.lock_wait()
    if not read.word("TO"):
        raise _Unparsed
    return old, read.table()


_NOT_COLUMNS = {"INDEX", "KEY", "UNIQUE", "FULLTEXT", "SPATIAL", "FOREIGN", "CHECK", "PERIOD"}
_NOT_COLUMNS |= {"SYSTEM"}


def _alter(table: tuple[str, str], read: _Reader) -> DdlStatement:
    """ALTER TABLE's clauses, split at the commas outside parentheses."""
    clauses: list[list[_Token]] = [[]]
    depth = 0
    for token in read.rest():
        if token.kind == "punct" and token.text in "()":
            depth += 1 if token.text == "(" else -1
        if token.kind == "punct" and token.text == "," and depth == 0:
            clauses.append([])
        else:
            clauses[-1].append(token)
    new_name = table
    rebuild: list[tuple[str, str]] = []
    absorbed: list[tuple[str, str]] = []
    ops: list[tuple[str, ...]] | None = []
    for clause in clauses:
        reader = _Reader(clause, read.default_schema)
        renamed = _renamed_to(reader)
        if renamed is not None:
            new_name = renamed
            continue
        reader.at = 0
        if reader.words("CONVERT", "TABLE"):
            # MariaDB: the table becomes a partition (its rows move, no row events) and is gone.
            absorbed.append(reader.table())
            rebuild.append(table)
            continue
        also = _rewrites_rows(reader)
        if also is not None:
            rebuild.append(table)
            rebuild.extend(also)
            op = None if also else _in_place(clause)
            ops = None if ops is None or op is None else [*ops, op]
    rebuilds = tuple(dict.fromkeys(new_name if name == table else name for name in rebuild))
    if absorbed:
        return DdlStatement("drop_table", tuple(absorbed), (), rebuilds)
    targets = tuple(dict.fromkeys((table, *(name for name in rebuild if name != table))))
    if new_name != table:
        return DdlStatement("rename_table", targets, ((table, new_name),), rebuilds)
    in_place = tuple(ops) if ops and rebuilds == (table,) else ()
    return DdlStatement("alter_table", targets, (), rebuilds, in_place)


_NOT_PLAIN_COLUMN = {"NOT", "DEFAULT", "AS", "GENERATED", "AUTO_INCREMENT", "PRIMARY", "UNIQUE"}
_NOT_PLAIN_COLUMN |= {"KEY", "SERIAL", "TIMESTAMP", "CHECK", "REFERENCES", "INVISIBLE", "ON"}
_NOT_PLAIN_COLUMN |= {"VIRTUAL", "STORED", "PERSISTENT", "IF", "SYSTEM", "WITHOUT"}


def _in_place(clause: list[_Token]) -> tuple[str, ...] | None:
    """A clause's in-place change of a mirror, or None when only a rebuild is exact:
    ``DROP [COLUMN] [IF EXISTS] c``, ``RENAME COLUMN a TO b``, and ``ADD [COLUMN] c <type>``
    with nothing that could fill it with anything but NULL (no DEFAULT, NOT NULL, generated
    expression, AUTO_INCREMENT; not TIMESTAMP, which a server may give an implicit default;
    not ``IF NOT EXISTS``, which may keep an existing column's values)."""
    words = [token.upper for token in clause]
    names = [token for token in clause if token.is_name]
    if words[:1] == ["DROP"]:
        rest = clause[2:] if words[1:2] == ["COLUMN"] else clause[1:]
        if [token.upper for token in rest[:2]] == ["IF", "EXISTS"]:
            rest = rest[2:]
        if len(rest) == 1 and rest[0].is_name and rest[0].upper not in {"PRIMARY", "PARTITION"}:
            return ("drop", rest[0].text)
        return None
    if words[:2] == ["RENAME", "COLUMN"] and len(clause) == 5 and words[3] == "TO":
        if clause[2].is_name and clause[4].is_name:
            return ("rename", clause[2].text, clause[4].text)
        return None
    if words[:1] == ["ADD"]:
        rest = clause[2:] if words[1:2] == ["COLUMN"] else clause[1:]
        if len(rest) < 2 or not rest[0].is_name or rest[0].upper in _NOT_COLUMNS:
            return None
        if any(token.upper in _NOT_PLAIN_COLUMN for token in rest[1:]) or not names:
            return _constant_default(rest)
        return ("add_null", rest[0].text)
    return None


_INTEGER_TYPES = {"TINYINT", "SMALLINT", "MEDIUMINT", "INT", "INTEGER", "BIGINT"}
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_.,:;@/+=-]*(?: +[A-Za-z0-9_.,:;@/+=-]+)*")


def _constant_default(rest: list[_Token]) -> tuple[str, ...] | None:
    """``c <integer type> … DEFAULT <integer>`` or ``c VARCHAR(n) … DEFAULT '<text>'`` (plain
    ASCII text with no trailing space, the same in every character set and escape mode), with
    at most ``NULL``/``NOT NULL`` and ``FIRST``/``AFTER x`` besides: every existing row gets
    that value. ``("add_int", c, "5")`` or ``("add_text", c, "text")``; None otherwise."""
    words = [token.upper for token in rest]
    at = 1
    if words[at : at + 1] and words[at] in _INTEGER_TYPES:
        kind, at = "add_int", at + 1
        if words[at : at + 1] == [""] and rest[at].text == "(":
            if len(rest) < at + 3 or not rest[at + 1].text.isdigit() or rest[at + 2].text != ")":
                return None
            at += 3
        if words[at : at + 1] == ["UNSIGNED"]:
            at += 1
    elif words[at : at + 1] == ["VARCHAR"] and [t.text for t in rest[at + 1 : at + 2]] == ["("]:
        if len(rest) < at + 4 or not rest[at + 2].text.isdigit() or rest[at + 3].text != ")":
            return None
        kind, at = "add_text", at + 4
    else:
        return None
    value: str | None = None
    while at < len(rest):
        if words[at : at + 2] == ["NOT", "NULL"]:
            at += 2
        elif words[at] == "NULL":
            at += 1
        elif words[at] == "DEFAULT" and value is None and at + 1 < len(rest):
            value, taken = _literal(kind, rest[at + 1 : at + 3])
            at += taken
            if value is None:
                return None
        elif words[at:] == ["FIRST"] or (words[at] == "AFTER" and len(rest) == at + 2):
            break
        else:
            return None
    return (kind, rest[0].text, value) if value is not None else None


def _literal(kind: str, tokens: list[_Token]) -> tuple[str | None, int]:
    """The default's literal and how many tokens it took (``-`` then digits for a negative)."""
    first = tokens[0]
    if kind == "add_text":
        plain = first.kind == "string" and _PLAIN_TEXT.fullmatch(first.text) is not None
        return (first.text if plain else None), 2
    if first.kind == "punct" and first.text == "-" and len(tokens) > 1:
        return (f"-{tokens[1].text}" if _integer(tokens[1]) else None), 3
    return (first.text if _integer(first) else None), 2


def _integer(token: _Token) -> bool:
    return token.number and token.text.isdigit()


def _renamed_to(read: _Reader) -> tuple[str, str] | None:
    """``RENAME [TO|AS] name``: the table's new name (None for any other clause)."""
    if not read.word("RENAME"):
        return None
    following = read.peek()
    if following is None or following.upper in {"COLUMN", "INDEX", "KEY"}:
        return None
    read.word("TO", "AS")
    return read.table()


def _rewrites_rows(read: _Reader) -> list[tuple[str, str]] | None:
    """Whether a clause rewrites existing rows without row events: None if not, else the other
    tables it rewrites too (EXCHANGE PARTITION's, and the new table of MariaDB's CONVERT
    PARTITION … TO TABLE)."""
    first = read.peek()
    if first is None:
        return None
    word = first.upper
    read.at += 1
    following = read.peek()
    after = following.upper if following is not None else ""
    if word == "ADD":
        if after == "CONSTRAINT":
            return [] if any(token.upper == "PRIMARY" for token in read.rest()) else None
        if after == "PRIMARY":
            return []
        return None if after in _NOT_COLUMNS or after == "PARTITION" else []
    if word == "DROP":
        if after in {"INDEX", "KEY"} and _is_primary(read.peek(1)):
            return []  # DROP INDEX `PRIMARY` is DROP PRIMARY KEY
        if after in _NOT_COLUMNS or after in {"CONSTRAINT", "DEFAULT"}:
            return None
        return []  # a column, the primary key, or a partition (its rows go without events)
    if word == "CONVERT" and after == "PARTITION":
        rest = read.rest()
        for index, token in enumerate(rest[:-1]):
            if token.upper == "TABLE":
                return [_Reader(rest[index + 1 :], read.default_schema).table()]
        return []
    if word in {"CHANGE", "MODIFY", "TRUNCATE", "CONVERT"}:
        return []
    if word == "RENAME":
        return [] if after == "COLUMN" else None
    if word == "EXCHANGE":
        rest = read.rest()
        for index, token in enumerate(rest[:-1]):
            if token.upper == "TABLE":
                return [_Reader(rest[index + 1 :], read.default_schema).table()]
        return []
    return None


def _is_primary(token: _Token | None) -> bool:
    """The primary key's index name, ```PRIMARY``` (a bare PRIMARY is a keyword)."""
    return token is not None and token.is_name and token.text.upper() == "PRIMARY"


_ACCOUNT_HEADS = (("CREATE", "USER"), ("ALTER", "USER"), ("SET", "PASSWORD"), ("GRANT",))
_ACCOUNT_TEXT = re.compile(
    r"\s*(?:/\*.*?\*/\s*)*(?:CREATE\s+(?:OR\s+REPLACE\s+)?USER|ALTER\s+USER|SET\s+PASSWORD"
    r"|GRANT)\b.*\b(?:IDENTIFIED|PASSWORD|USER)\b",
    re.I | re.S,
)


def without_secrets(statement: str, *, mariadb: bool = True, ansi_quotes: bool = False) -> str:
    """The statement as the WAL and ``cdc_ddl`` keep it: an account statement that may hold a
    password or its hash (``CREATE USER … IDENTIFIED BY 'pw'``, which MariaDB writes to its
    binlog in clear, ``ALTER USER``, ``SET PASSWORD``, ``GRANT … IDENTIFIED BY``) is replaced by
    its first words and a note; every other statement is kept as it is. Such statements act on
    no table, so nothing the loader needs is lost. A statement that cannot be tokenized is
    judged by its text, so a secret is never kept because of a parse failure."""
    try:
        words = [token.upper for token in _tokens(statement, mariadb, ansi_quotes)]
    except (SqlglotError, ValueError, IndexError):
        if _ACCOUNT_TEXT.match(statement):
            return "an account statement … (not kept: it may hold a password)"
        return statement
    if words[:4] == ["CREATE", "OR", "REPLACE", "USER"]:
        words = ["CREATE", "USER", *words[4:]]
    head = next((h for h in _ACCOUNT_HEADS if tuple(words[: len(h)]) == h), None)
    if head is None:
        return statement
    if head == ("GRANT",) and not {"IDENTIFIED", "PASSWORD"}.intersection(words):
        return statement  # a plain GRANT names no password
    return f"{' '.join(head)} … (not kept: an account statement may hold a password)"


def ddl_context(
    default_schema: str,
    ansi_quotes: bool,
    rebuild: Sequence[tuple[str, str]] = (),
    no_backslash_escapes: bool | None = None,
) -> bytes:
    """What a WAL DDL row keeps (in its ``after`` column) of the session that ran it: its
    default schema and whether ``"x"`` is a name; and ``rebuild``, tables capture saw enter
    the included ones (renamed from an excluded name), which have no mirror to move. The
    row's own ``schema`` is its first target's, which is not the session's when the statement
    qualifies a name."""
    context: dict[str, Any] = {"default_schema": default_schema, "ansi_quotes": ansi_quotes}
    if rebuild:
        context["rebuild"] = [list(name) for name in rebuild]
    if no_backslash_escapes is not None:
        context["no_backslash_escapes"] = no_backslash_escapes
    image = encode_image(context)
    assert image is not None
    return image


def classify_row(row: Mapping[str, Any], *, mariadb: bool = True) -> DdlStatement:
    """Classify a WAL DDL row in the session it ran in (``ddl_context``). A row written before
    the context was kept falls back to the row's schema, as the loader always did."""
    context = decode_document(row.get("after")) or {}
    statement = classify_ddl(
        row.get("statement") or "",
        session_schema(row),
        mariadb=mariadb,
        ansi_quotes=bool(context.get("ansi_quotes", False)),
        no_backslash_escapes=context.get("no_backslash_escapes"),
    )
    entering = tuple((str(s), str(t)) for s, t in context.get("rebuild") or ())
    if entering:
        rebuilds = (*statement.rebuilds, *(n for n in entering if n not in statement.rebuilds))
        return replace(statement, rebuilds=rebuilds)
    return statement


def session_schema(row: Mapping[str, Any]) -> str:
    """The default schema of the session a WAL DDL row ran in (``ddl_context``), else the
    row's own schema (segments written before the context was kept)."""
    context = decode_document(row.get("after")) or {}
    return str(context.get("default_schema", row.get("schema") or ""))
