"""The pages' rendered tables, from the kept results they come from (``tools/render_docs.py``).

- :mod:`.format`: how numbers, intervals and tables are written; :mod:`.captions`: each table's
  caption (file, command, machine, date) from the file's provenance record;
- one module per family of tables: :mod:`.benchmarks`, :mod:`.sizing`, :mod:`.pretraining`,
  :mod:`.studies`, :mod:`.setups`, :mod:`.paper`, :mod:`.shipped` (the trained model in the package,
  timed ``make`` targets);
- :mod:`.registry`: each marker's files and renderer; :mod:`.blocks`: the markers on the pages.

A renderer shows what its files hold and decides nothing: the variant names, the pairs compared and
every goal's pass flag are read from the files.
"""
from .blocks import BLOCK, RenderError, block_text, pages, process, source_path
from .registry import TABLES, Table

__all__ = ["BLOCK", "TABLES", "Table", "RenderError", "block_text", "pages", "process", "source_path"]
