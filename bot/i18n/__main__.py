"""``python -m bot.i18n [language]``: the messages a language's catalogs lack, file by file."""

from __future__ import annotations

import sys
from collections import defaultdict

from .catalog import lacking


def main(argv: list[str]) -> int:
    language = argv[0] if argv else "ja"
    by_file = defaultdict(list)
    for said in lacking(language):
        by_file[said.path].append(said)
    for path, items in by_file.items():
        print(f"{path}: {len(items)}")
        for said in items:
            print(f"  {said.line or '?'}: {said.msgid if said.msgid is not None else '(an f-string)'}")
    total = sum(len(v) for v in by_file.values())
    print(f"{total} messages lack {language}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
