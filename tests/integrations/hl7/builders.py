"""HL7 v2 test messages (our own) and ACK readers."""

from __future__ import annotations

from accounts.permissions import ApiScope
from accounts.services import api_key_create
from accounts.tenancy import tenant_scope

ER7 = "x-application/hl7-v2+er7"


def make_key(tenant, owner, scopes=(ApiScope.HL7_WRITE,)) -> str:
    with tenant_scope(tenant):
        _, raw = api_key_create(tenant=tenant, actor=owner, name="EHR interface", scopes=list(scopes))
    return raw


def segments_of(ack: str | bytes) -> list[list[str]]:
    text = ack.decode() if isinstance(ack, bytes) else ack
    return [line.split("|") for line in text.split("\r") if line]


def seg(ack, name: str, index: int = 0) -> list[str]:
    return [s for s in segments_of(ack) if s[0] == name][index]


def msh(message_type: str, control_id: str = "CTRL-1", version: str = "2.5.1", sep: str = "|",
        enc: str = "^~\\&") -> str:
    return sep.join(["MSH", enc, "EPIC", "NORTH CLINIC", "CARETEXT", "CARETEXT-FAC", "20260301083000", "",
                     message_type, control_id, "P", version])


PID = "PID|1||MRN-4242^^^NORTH^MR~999-11-2222^^^SSA^SS||Delgado^Rosa^M^^^^L||19791123|F|||||^PRN^CP^^1^202^5550177~^NET^Internet^rosa@example.test||SPA"
PID_V23 = "PID|1||MRN-4242^^^NORTH^MR||DELGADO^ROSA||19791123|F|||||(202)555-0177^PRN^CP||SPANISH"


def adt(event: str = "A04", *, pid: str = PID, control_id: str = "ADT-1", version: str = "2.5.1",
        extra: tuple[str, ...] = ()) -> str:
    return "\r".join([msh(f"ADT^{event}^ADT_A01", control_id, version), f"EVN|{event}|20260301083000", pid,
                      "PV1|1|O", *extra])


def siu(event: str = "S12", *, appointment_id: str = "APT-100", start: str = "202604011030",
        end: str = "202604011100", control_id: str = "SIU-1", version: str = "2.5.1", pid: str = PID,
        tq1: bool = True) -> str:
    if tq1:
        sch = f"SCH|{appointment_id}^EPIC|{appointment_id}^EPIC|||||^Follow-up|FOLLOWUP^Follow-up visit|30|MIN"
        timing = [f"TQ1|1||||||{start}|{end}"]
    else:  # v2.3 style: SCH-11 TQ (^^duration^start^end)
        sch = (f"SCH|{appointment_id}^EPIC|{appointment_id}^EPIC|||||^Follow-up|FOLLOWUP^Follow-up visit|30|MIN|"
               f"^^30^{start}^{end}")
        timing = []
    return "\r".join([msh(f"SIU^{event}^SIU_S12", control_id, version), sch, *timing, pid, "RGS|1",
                      f"AIS|1||99213^Office visit|{start}|||30|MIN", "AIL|1||NORTH^204^^Main Street Clinic",
                      "AIP|1||1234^Okafor^Ngozi^^^Dr|ATTENDING"])


def oru(*, control_id: str = "ORU-1", order: str = "ORD-555", status: str = "F", pid: str = PID) -> str:
    return "\r".join([msh("ORU^R01^ORU_R01", control_id), pid,
                      f"OBR|1|PL-1|{order}^LAB|24331-1^Lipid panel^LN|||202603010800|||||||||||||||202603011200|||{status}",
                      "OBX|1|NM|2093-3^Cholesterol^LN||182|mg/dL|<200|N|||F",
                      "OBX|2|ST|2571-8^Triglycerides^LN||95|mg/dL|<150|N|||F",
                      "NTE|1||Fasting sample"])
