"""The CSV/TSV reader refuses ragged rows and open quotes with the file and line, instead of
scoring a missing cell as "None", crashing on an extra one, or reading an open quote to the end."""

from __future__ import annotations

import pytest

from harness.data import read_records
from harness.errors import HarnessError


@pytest.mark.parametrize("text, line, what", [
    ("q,a\nx,1\ny\nz,3\n", 3, "1 cell(s) where the header has 2"),
    ("q,a\nx,1,extra\n", 2, "3 cell(s) where the header has 2"),
    ('q,a\nx,1\ny,"open\nz,3\nw,4\n', 3, "unexpected end of data"),
    ('q,a\nx,"1"2\n', 2, "expected after"),
    ("q,q\nx,1\n", 1, "distinct, non-empty column names"),
])
def test_ragged_rows_and_open_quotes_name_the_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(HarnessError) as err:
        read_records(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line {line}: ") and what in message and "\n" not in message


def test_tsv_rows_are_checked_too(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("q\ta\nx\t1\ny\n")
    with pytest.raises(HarnessError, match=r"data.tsv: line 3: 1 cell\(s\)"):
        read_records(path)


def test_quoted_cells_spanning_lines_and_blank_lines_still_read(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('q,a\n"two\nlines",1\n\n"comma, inside",2\n')
    assert read_records(path) == [{"q": "two\nlines", "a": "1"}, {"q": "comma, inside", "a": "2"}]
    path.write_text('q,a\n"two\nlines",1\nbad\n')
    with pytest.raises(HarnessError, match="line 4: 1 cell"):
        read_records(path)
