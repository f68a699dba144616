"""HL7 v2 acknowledgements (original mode): ``MSH`` + ``MSA`` (+ ``ERR``), and batch ACKs.

The ACK's MSH swaps the sender and receiver of the message it answers, keeps its delimiters
and version, and echoes MSH-10 in MSA-2. v2.5 and later name the field at fault in ERR-2
(location), ERR-3 (code, table 0357) and ERR-8 (message); v2.3/v2.4 only have ERR-1.
The text we add never contains submitted values (no PHI in ACKs).
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

from integrations.hl7.er7 import CODE_TEXT, Envelope, Hl7Error

DEFAULT_ENCODING = "^~\\&"
DEFAULT_VERSION = "2.5.1"
APPLICATION = "CARETEXT"


@dataclass(frozen=True)
class Header:
    """The raw MSH fields an ACK needs (escaped as received, so they are echoed verbatim)."""

    field_sep: str = "|"
    encoding: str = DEFAULT_ENCODING
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = DEFAULT_VERSION

    @classmethod
    def from_message(cls, text: str) -> Header:
        """Read MSH straight from the text: works even when the rest cannot be parsed."""
        line = text.split("\r", 1)[0]
        if not line.startswith("MSH") or len(line) < 8:
            return cls()
        sep = line[3]
        fields = line.split(sep)  # fields[n - 1] is MSH-n (MSH-1 is the separator itself)
        encoding = fields[1] if len(fields[1]) >= 4 else DEFAULT_ENCODING

        def get(n: int) -> str:
            return fields[n - 1].strip() if len(fields) >= n else ""

        message_type = get(9).split(encoding[0])
        return cls(field_sep=sep, encoding=encoding, sending_app=get(3), sending_facility=get(4),
                   receiving_app=get(5), receiving_facility=get(6), message_type=message_type[0].upper(),
                   event=message_type[1] if len(message_type) > 1 else "", control_id=get(10),
                   processing_id=get(11) or "P", version=get(12).split(encoding[0])[0] or DEFAULT_VERSION)

    @property
    def uses_err1(self) -> bool:
        """Before v2.5 the error location and code live in ERR-1 (ELD); later in ERR-2/3/8."""
        return self.version.startswith(("2.1", "2.2", "2.3", "2.4"))

    def escape(self, text: str) -> str:
        comp, rep, esc, sub = (self.encoding + "\\&")[:4]
        out = text.replace(esc, f"{esc}E{esc}")
        for char, code in ((self.field_sep, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
            out = out.replace(char, f"{esc}{code}{esc}")
        return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S+0000")


def _control_id() -> str:
    return uuid.uuid4().hex[:20]  # ST(20) in v2.3


def _err_segment(header: Header, error: Hl7Error) -> str:
    s, comp, sub = header.field_sep, header.encoding[0], header.encoding[3]
    code = f"{error.code}{{0}}{CODE_TEXT.get(error.code, '')}{{0}}HL70357"
    loc = error.location
    if header.uses_err1:  # ELD: segment^sequence^field^code (code's parts are subcomponents)
        where = [loc.segment, "1", str(loc.field) if loc.field else ""] if loc else ["", "", ""]
        return f"ERR{s}{comp.join([*where, code.format(sub)])}"
    where = ""
    if loc:
        parts = [loc.segment, "1", str(loc.field)] if loc.field else [loc.segment, "1"]
        if loc.component:
            parts += ["1", str(loc.component)]
        where = comp.join(parts)
    return s.join(["ERR", "", where, code.format(comp), error.severity, "", "", "", header.escape(error.message)])


def build_ack(header: Header, code: str, text: str = "", errors: tuple[Hl7Error, ...] = ()) -> str:
    """One ACK message (segments joined by CR) answering the message ``header`` came from."""
    s, comp = header.field_sep, header.encoding[0]
    msh = s.join(["MSH", header.encoding, APPLICATION if not header.receiving_app else header.receiving_app,
                  header.receiving_facility, header.sending_app, header.sending_facility, _now(), "",
                  comp.join(["ACK", header.event, "ACK"]) if header.event else "ACK", _control_id(),
                  header.processing_id, header.version])
    msa = s.join(["MSA", code, header.control_id, header.escape(text)])
    return "\r".join([msh, msa, *(_err_segment(header, e) for e in errors)])


def build_batch_ack(envelope: Envelope, acks: list[str]) -> str:
    """ACKs for a batch or file: FHS/BHS (swapped, referencing the original) … BTS/FTS."""
    out = []
    for name in ("FHS", "BHS"):
        line = envelope.headers.get(name)
        if line is None and not (name == "BHS" and "FHS" in envelope.headers):
            continue
        header = _envelope_header(line or envelope.headers["FHS"])
        # FHS/BHS-11 is this batch's control id, -12 the one it answers.
        out.append(header["sep"].join(["BHS" if name == "BHS" else "FHS", header["enc"], header[5], header[6],
                                       header[3], header[4], _now(), "", "", "", _control_id(), header[11]]))
    out.extend(acks)
    out.append(f"BTS|{len(acks)}")
    if "FHS" in envelope.headers:
        out.append("FTS|1")
    return "\r".join(out)


def _envelope_header(line: str) -> dict:
    sep = line[3] if len(line) > 3 else "|"
    fields = line.split(sep)
    got = {n: (fields[n - 1] if len(fields) >= n else "") for n in range(3, 12)}
    return {"sep": sep, "enc": fields[1] if len(fields) > 1 else DEFAULT_ENCODING, **got}
