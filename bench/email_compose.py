"""CPU per e-mail composed: ``email_compose.compose`` flattened by the ``email``
package's generator (what the ``smtp`` channel sent before issue 11's third
session) against ``email_mime.compose_bytes``, in one run, for three shapes:

* ``bench``: what ``bench/dispatch_email.py`` sends (ASCII title, a two-line text body);
* ``marketing``: a template's output: non-ASCII subject, text and HTML (a 3 kB
  HTML body with one 1,200-byte line), one-click unsubscribe headers, a
  display name in From and Reply-To;
* ``international``: a Cyrillic subject and bodies.

Usage (from the repository root)::

    .venv/bin/python bench/email_compose.py            # 2,000 messages per shape and side
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from email.generator import BytesGenerator
from typing import Any

from ceap.channels.base import Message
from ceap.channels.email_compose import compose
from ceap.channels.email_mime import compose_bytes
from ceap.channels.email_smtp import SmtpConfig

UNSUB = {"List-Unsubscribe": "<https://acme.example/unsubscribe?token=v1.abcdefghijklmnopqrstuvwxyz0123456789>",
         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
HTML = ("<html><body><table>"
        + "<tr><td style=\"padding:8px\">Hello {name}, here is 10 % off</td></tr>\n" * 25
        + "<p>" + "x" * 1200 + "</p></table></body></html>")


def shapes(n: int) -> dict[str, tuple[SmtpConfig, list[Message]]]:
    def messages(**kw: Any) -> list[Message]:
        return [Message("acme", f"acme:k{i}:email", f"c{i}", "win_back", "email", to=f"c{i}@example.com",
                        **{k: (v.format(i=i, name=f"Ana {i}") if isinstance(v, str) else v)
                           for k, v in kw.items()}) for i in range(n)]

    plain = SmtpConfig(from_address="Acme <news@acme.example>")
    named = SmtpConfig(from_address="Ärzte & Söhne <news@acme.example>", reply_to="Hilfe <help@acme.example>")
    return {
        "bench": (plain, messages(title="Win back", body="discount: 10\norder: o{i}")),
        "marketing": (named, messages(title="{name}, wir vermissen Sie ✓", body="Hallo {name},\n10 % Rabatt.",
                                      html=HTML, headers=UNSUB)),
        "international": (plain, messages(title="Скидка 10% для вас, {name}",
                                          body="Здравствуйте, {name}!\nВаша скидка ждёт вас.",  # noqa: RUF001
                                          html="<p>Здравствуйте, <b>{name}</b>!</p>")),
    }


def old(m: Message, config: SmtpConfig) -> bytes:
    buffer = io.BytesIO()
    BytesGenerator(buffer).flatten(compose(m, config), linesep="\r\n")
    return buffer.getvalue()


def new(m: Message, config: SmtpConfig) -> bytes:
    return compose_bytes(m, config).data


def cpu_per_message(fn: Callable[[Message, SmtpConfig], bytes], config: SmtpConfig,
                    messages: list[Message]) -> float:
    started = time.process_time()
    for m in messages:
        fn(m, config)
    return (time.process_time() - started) / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (the best of each side is shown)")
    args = parser.parse_args()
    print(f"{args.messages:,} messages per shape and side, {args.rounds} alternating rounds; "
          f"load {os.getloadavg()[0]:.1f}")
    for name, (config, messages) in shapes(args.messages).items():
        a, b = [], []
        for _ in range(args.rounds):
            a.append(cpu_per_message(old, config, messages))
            b.append(cpu_per_message(new, config, messages))
        print(f"{name:<14} email package {min(a) * 1e6:7.1f} us/msg   "
              f"compose_bytes {min(b) * 1e6:6.1f} us/msg   {min(a) / min(b):5.1f}x")


if __name__ == "__main__":
    main()
