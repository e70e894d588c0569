"""The harness itself: a wrong documented output, a failing command and a skip each do what they should.

Without these, a matcher that accepted everything would make every documentation test pass.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import pytest
from sybil.example import SybilFailure

from test.docs import expected, shell
from test.docs.documents import SYBIL, DocRuns

ACK = '{"type":"ACK","batch":1,"batch_id":"b-1","accepted":1,"duplicate":false}'


@pytest.mark.parametrize(
    ("documented", "real"),
    [
        (ACK, ACK),
        ('{"type":"ACK","batch":1,…}', ACK),
        ('{"type":"ACK","batch_id":"b-…","accepted":…}', ACK),
        ('{"values":[1,…]}', '{"values":[1,2,3]}'),
        ('{"values":[…,{"a":3}]}', '{"values":[{"a":1},{"a":2},{"a":3}]}'),
        ('{"conversion":0.2448979591836735}', '{"conversion":0.24489795918367346}'),
        ('retry: 2000\n\nid: 1\ndata: {"name":"a",…}', 'retry: 2000\n\nid: 99\ndata: {"name":"a","x":1}\n'),
    ],
)
def test_documented_output_that_holds(documented: str, real: str) -> None:
    assert expected.mismatch(documented, real) is None


@pytest.mark.parametrize(
    ("documented", "real"),
    [
        ('{"type":"ACK","accepted":2}', ACK),
        ('{"type":"ACK","missing":…}', ACK),
        ('{"values":[1,2]}', '{"values":[1,2,3]}'),
        ('{"batch":"1"}', ACK),
        ('{"duplicate":0}', ACK),
        (ACK, "not json"),
        ("retry: 2000\nid: 1", "id: 1\nretry: 2000"),
        ('data: {"name":"a"}', 'data: {"name":"b"}'),
    ],
)
def test_documented_output_that_does_not(documented: str, real: str) -> None:
    assert expected.mismatch(documented, real) is not None


def test_keys_only_compares_keys_not_values() -> None:
    assert expected.keys_mismatch('{"a":{"b":1},"c":[{"d":2}]}', '{"a":{"b":7},"c":[{"d":9}],"e":0}') is None
    assert expected.keys_mismatch('{"a":{"b":1}}', '{"a":{"x":1}}') is not None
    assert expected.keys_mismatch('{"c":[{"d":2}]}', '{"c":[{"e":2}]}') is not None


def test_shell_blocks_split_into_commands_and_their_output() -> None:
    block = (
        "# a comment, not output\n"
        "export A=1\n"
        "curl -s -X POST x -d '{\n  \"a\": 1}'\n"
        '# {"ok":true}\n'
        "#\n"
        "python send.py <<'EOF'\n[1,\n\n 2]\nEOF\n"
        "curl a \\\n  b\n"
        "# done\n"
        "\n"
        "# another comment\n"
    )
    commands = shell.split(block)
    assert [c.text.splitlines()[0] for c in commands] == [
        "export A=1",
        "curl -s -X POST x -d '{",
        "python send.py <<'EOF'",
        "curl a \\",
    ]
    assert [c.output for c in commands] == [[], ['{"ok":true}', ""], [], ["done"]]


def _run(tmp_path: Path, doc_runs: DocRuns, markdown: str) -> None:
    """Every example of `markdown`, in order, as test_examples runs a documentation file."""
    path = tmp_path / "example.md"
    path.write_text(markdown)
    for example in SYBIL.parse(path):
        example.namespace["run"] = doc_runs.for_document(path)
        example.evaluate()


POST = """```sh
curl -s -X POST "$BASE/batch?sessionId=0d856b46-48cd-4fba-946b-53d15b7b43e0" -H 'Content-Type: application/json' \\
  -d '{"batch_id":"b-1","events":[{"type":"EVENT","timestamp":1624422533298,"name":"a"}]}'
# {"type":"ACK","batch":1,"batch_id":"b-1","accepted":ACCEPTED,"duplicate":false}
```
"""


def test_a_true_example_passes(tmp_path: Path, doc_runs: DocRuns) -> None:
    _run(tmp_path, doc_runs, POST.replace("ACCEPTED", "1"))


def test_a_wrong_shown_output_fails(tmp_path: Path, doc_runs: DocRuns) -> None:
    with pytest.raises(SybilFailure, match="JSON differs"):
        _run(tmp_path, doc_runs, POST.replace("ACCEPTED", "2"))


def test_a_python_print_is_checked_against_its_comment(tmp_path: Path, doc_runs: DocRuns) -> None:
    _run(tmp_path, doc_runs, '```python\nprint(\'{"a": 1, "b": 2}\')  # {"a":1,…}\nprint("done")  # done\n```\n')
    with pytest.raises(SybilFailure, match="not found in order"):
        _run(tmp_path, doc_runs, '```python\nprint("done")  # {"a":1}\n```\n')


@pytest.mark.parametrize("block", ["```sh\nfalse\n```\n", "```python\nraise SystemExit(3)\n```\n", "```sql\nSELECT nope;\n```\n"])
def test_a_failing_example_fails(tmp_path: Path, doc_runs: DocRuns, block: str) -> None:
    with pytest.raises(SybilFailure):
        _run(tmp_path, doc_runs, block)


def test_a_skip_directive_skips_with_its_reason(tmp_path: Path, doc_runs: DocRuns) -> None:
    with pytest.raises(unittest.SkipTest, match="needs Docker"):
        _run(tmp_path, doc_runs, '<!-- skip: next "needs Docker" -->\n```sh\ndocker compose up\n```\n')


UPLOAD_JS = """```js
const track = (name) => fetch("http://127.0.0.1:8000/batch?sessionId=0d856b46-48cd-4fba-946b-53d15b7b43e0", {
  method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify([{ type: "EVENT", timestamp: 1624422533298, name }]),
});
await track("view");
```
"""


@pytest.mark.browser
def test_a_page_example_that_uploads_passes(tmp_path: Path, doc_runs: DocRuns) -> None:
    _run(tmp_path, doc_runs, UPLOAD_JS)


@pytest.mark.browser
@pytest.mark.parametrize(
    ("block", "why"),
    [
        ("```js\nnull.x;\n```\n", "the page failed"),
        ('```js\nimport { nope } from "/sdk/missing.js";\n```\n', "the page failed"),
        ('```js\nconst track = () => fetch("http://127.0.0.1:8000/readyz");\nawait track();\n```\n', "none was stored"),
    ],
)
def test_a_failing_page_example_fails(tmp_path: Path, doc_runs: DocRuns, block: str, why: str) -> None:
    with pytest.raises(SybilFailure, match=why):
        _run(tmp_path, doc_runs, block)
