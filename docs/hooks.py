"""MkDocs hooks (``hooks:`` in mkdocs.yml): add the generated pages of ``docs/gen_pages.py`` and
the files of ``benchmarks/results/`` to the site. Nothing is written into ``docs/``."""

import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_pages  # noqa: E402

sys.path.insert(0, str(gen_pages.ROOT / "src"))  # the checkout's framecast, also without an install


def _add(files, file: File) -> None:
    old = files.get_file_from_path(file.src_uri)
    if old is not None:  # a generated page replaces a file of the same name
        files.remove(old)
    files.append(file)


def on_files(files, config):
    for uri, text in gen_pages.pages().items():
        _add(files, File.generated(config, uri, content=text))
    for uri, path in gen_pages.benchmark_files().items():
        _add(files, File.generated(config, uri, abs_src_path=str(path)))
    for uri, text in gen_pages.benchmark_folder_indexes().items():
        _add(files, File.generated(config, uri, content=text))
    return files
