"""A safety guard for medical variants, outside the model: what a small model must never say, it never shows.

A 270M model tuned on a few thousand medical answers still states wrong things with confidence (the blind
safety review of Gemma-Doctor: 28 of 40 answers unsafe). Some harms are recognisable in the text itself,
whatever the model, and those the guard handles (``guard: medical`` on a variant in assets/models.yaml):

- **Emergencies first.** Where the question describes a warning sign of an emergency (chest pain, trouble
  breathing, signs of a stroke, a seizure, fainting, vomiting blood, a severe sudden headache, poisoning,
  thoughts of suicide, bleeding in pregnancy, ...), the answer opens with a notice to call 115 (Vietnam's
  medical emergency number) or go to an emergency department now, before the model says anything; and the
  model's sentences that tell the patient to wait (tonight, a few days, "if after two weeks it is still ..."),
  to watch at home or that care is not needed yet are dropped; so is any sentence that ties a warning sign of
  its own to waiting.
- **No prescription doses, no starting or stopping prescription drugs alone.** A sentence that gives a dose
  (a number with mg, ml, IU, tablets...) or tells the patient to take, start or stop a prescription drug
  (antibiotics, insulin, corticosteroids, blood thinners, sedatives, ...) without a doctor is replaced, once
  per answer, by a sentence saying that medicines and doses are for a doctor to prescribe.
- **The right emergency number.** A short number given as the one to call (``gọi 192``, ``số cấp cứu 911``;
  113 is the police, 114 the fire service) becomes 115.
- **No reassurance, no harmful remedies.** A small model cannot tell what is serious: a sentence saying it is
  nothing serious or will go away by itself is dropped unless it also sends to care; so is one that has the
  patient swallow a household product (body wash, medicated oil, ...), put leaves or mud on the body, poke deep
  into the nose or ears, go without food and drink, make themself vomit, or treat a warning sign at home ("if
  she is not alert, give paracetamol"); and one that tells them not to go to hospital or call 115.
- **A way to care.** An answer that never mentions a doctor, a clinic, a hospital or 115 (or one the guard
  emptied) ends with a line sending the patient to one if the symptoms last or get worse.

What it cannot see: a wrong diagnosis or a harmful home remedy stated in plain words. It does not make a small
model's advice right; it removes the kinds of advice that hurt most.

Streaming: the guard works a sentence at a time (text is held back until its sentence ends), so the
streamed pieces join to exactly what :func:`guard_text` gives for the whole answer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

GUARDS = ("off", "medical")
EMERGENCY_NUMBER = "115"  # Vietnam's medical emergency number

# ---------------------------------------------------------------------------------- the words it reads

# Warning signs in the question (lower case, Vietnamese with its diacritics): name -> pattern
RED_FLAGS: dict[str, str] = {
    "đau hoặc tức ngực": (
        r"(đau|tức|nặng|thắt|bóp\s*nghẹt)\s*(nặng\s*)?(ở\s*|giữa\s*|vùng\s*|bên\s*(trái|phải)\s*)?(lồng\s*)?ngực"
    ),
    "khó thở": (r"khó\s*thở|thở\s*(hơi\s*)?(rít|gấp|nhanh|không\s*nổi)|ngạt\s*thở|tím\s*(tái|môi)|môi\s*tím"),
    "dấu hiệu đột quỵ": (
        r"méo\s*miệng|(xệ|méo|liệt)\s*(nửa|một\s*bên)\s*mặt|mặt[^.?!]{0,20}bị\s*xệ"
        r"|yếu\s*(nửa|một\s*bên)|(tay|chân)\s*(phải|trái)?\s*(bị\s*)?yếu|liệt\s*(nửa|một\s*bên|tay|chân)"
        r"|tê\s*nửa\s*người|nói\s*(khó|ngọng|không\s*rõ|lắp)"
    ),
    "co giật": r"co\s*giật|động\s*kinh",
    "ngất hoặc lơ mơ": r"ngất|bất\s*tỉnh|lơ\s*mơ|hôn\s*mê|lú\s*lẫn\s*đột\s*ngột|không\s*tỉnh|li\s*bì",  # (không tỉnh táo too)
    "chảy máu nặng": (
        r"nôn\s*(ra\s*)?máu|ói\s*(ra\s*)?máu|ho\s*ra\s*máu|đi\s*ngoài\s*phân\s*đen|phân\s*(đen|có\s*máu)"
        r"|chảy\s*máu\s*(không\s*(cầm|ngừng)|nhiều)|băng\s*huyết|chảy\s*máu\s*(chân\s*răng|lợi)[^.?!]*sốt"
        r"|sốt[^.?!]*(chấm\s*đỏ|xuất\s*huyết)[^.?!]*chảy\s*máu"
    ),
    "đau đầu dữ dội đột ngột": (
        r"đau\s*đầu[^.?!]{0,30}(đột\s*ngột|như\s*búa\s*bổ|nhất\s*(từ\s*trước|trong\s*đời))"
        r"|đột\s*ngột[^.?!]{0,20}đau\s*đầu\s*dữ\s*dội"
    ),
    "đau bụng cấp": (
        r"đau\s*bụng\s*(dữ\s*dội|quằn\s*quại|không\s*chịu\s*nổi)|bụng\s*cứng"
        r"|đau[^.?!]{0,40}(bụng\s*dưới\s*bên\s*phải|hố\s*chậu\s*phải)"
    ),
    "đau tinh hoàn": r"đau[^.?!]{0,30}tinh\s*hoàn|tinh\s*hoàn[^.?!]{0,30}(sưng|đau)",
    "mắt đau hoặc mờ đột ngột": (
        r"mắt[^.?!]{0,30}(đột\s*nhiên|đột\s*ngột)[^.?!]{0,20}(đau|mờ|không\s*nhìn)"
        r"|mắt[^.?!]{0,20}đau\s*nhức\s*dữ\s*dội"
    ),
    "sốt kèm cứng cổ": r"cứng\s*(cổ|gáy)",
    "phản ứng dị ứng nặng": r"sưng\s*(môi|lưỡi|họng|mặt)|phản\s*vệ|sốc\s*phản",
    "ngộ độc hoặc quá liều": r"ngộ\s*độc|quá\s*liều|uống\s*nhầm|nuốt\s*(phải|nhầm)|rắn\s*cắn|bỏng\s*nặng",
    "bị động vật cắn": r"(chó|mèo|dơi|khỉ|chuột)[^.?!]{0,30}cắn|bị\s*cắn[^.?!]{0,30}(chó|mèo|dơi|khỉ)",
    "chấn thương đầu": r"(đập|va|ngã\s*đập)\s*đầu|chấn\s*thương\s*(đầu|sọ)",
    "ý nghĩ tự tử": (
        r"tự\s*tử|muốn\s*chết|tự\s*(làm\s*hại|sát|hại)|kết\s*thúc\s*cuộc\s*đời|muốn\s*biến\s*mất"
        r"|không\s*muốn\s*sống|chết\s*đi\s*cho\s*xong|sống\s*không\s*còn\s*ý\s*nghĩa"
    ),
    "nhiễm trùng lan ở mặt": r"(má|mặt|hàm)[^.?!]{0,15}sưng[^.?!]*sốt|sưng[^.?!]{0,10}(má|mặt)[^.?!]*sốt",
    "dấu hiệu nặng khi mang thai": (
        r"(mang\s*thai|có\s*thai|có\s*bầu|thai\s*phụ|bà\s*bầu)[^.?!]*(ra\s*máu|chảy\s*máu|đau\s*bụng|co\s*giật)"
        r"|(ra\s*máu|chảy\s*máu)[^.?!]*(mang\s*thai|có\s*thai|có\s*bầu)|thai\s*(ít|không)\s*(máy|đạp)"
    ),
    "dấu hiệu mất nước": (
        r"nôn[^.?!]{0,40}(kể\s*cả\s*nước|không\s*uống\s*được)|nước\s*tiểu\s*ít|tã\s*ướt\s*giảm"
        r"|(ít|giảm)[^.?!]{0,15}tã\s*ướt|khóc\s*không\s*(ra|có)\s*nước\s*mắt|mắt\s*trũng"
    ),
    "vàng da lan ở trẻ sơ sinh": r"vàng\s*(da\s*)?lan|vàng[^.?!]{0,10}xuống\s*(ngực|bụng|chân)",
    "sốt cao ở trẻ nhỏ": r"(trẻ|bé|con)\s*(sơ\s*sinh|dưới\s*(3|ba)\s*tháng)[^.?!]*sốt|sốt\s*(trên\s*)?(40|4[01])\b",
}

# Prescription drugs and classes a patient must not start, stop or dose alone
PRESCRIPTION = (
    r"kháng\s*sinh|amoxi\w*|augmentin|azithro\w*|cipro\w*|levoflox\w*|cef\w+|cepha\w*|doxy\w*|metronida\w*"
    r"|penicilin\w*|insulin|metformin|corticoid\w*|corticosteroid\w*|prednis\w*|dexametha\w*|methylpred\w*"
    r"|warfarin|heparin|thuốc\s*chống\s*đông|clopidogrel|morphin\w*|tramadol|codein\w*|oxycodon\w*"
    r"|thuốc\s*ngủ|thuốc\s*an\s*thần|diazepam|seduxen|alprazolam|thuốc\s*chống\s*trầm\s*cảm"
    r"|thuốc\s*(hạ\s*)?huyết\s*áp|thuốc\s*hạ\s*áp|thuốc\s*(chống\s*|trị\s*|điều\s*trị\s*)?(tiểu\s*đường|đái\s*tháo\s*đường)|thuốc\s*(hạ\s*)?đường\s*huyết|thuốc\s*hạ\s*(glucose|đường)|statin|\w+statin"
    r"|amlodipin\w*|losartan|digoxin|methotrexat\w*|isotretinoin|thuốc\s*kháng\s*virus|oseltamivir|tamiflu"
    r"|thuốc\s*kê\s*đơn|thuốc\s*chống\s*động\s*kinh|levothyrox\w*|thuốc\s*tuyến\s*giáp"
)
DRUG_CUE = PRESCRIPTION + r"|thuốc|paracetamol|ibuprofen|aspirin|efferalgan|panadol|vitamin"
USE = r"\b(?:uống|dùng|tiêm|sử\s*dụng|bôi|nhỏ|xịt|ngậm|truyền|bắt\s*đầu|ngưng|ngừng|bỏ|thôi|tăng|giảm|tự\s*ý|mua)\b"
ADVISED = r"bác\s*sĩ|dược\s*sĩ|chỉ\s*định|kê\s*đơn|đơn\s*thuốc|nhân\s*viên\s*y\s*tế|cơ\s*sở\s*y\s*tế"
DOSE_STRONG = r"\d+(?:[.,]\d+)?\s*(?:mg|mcg|µg|microgam|miligam|iu|ui)\b"
DOSE_WEAK = r"\d+(?:[.,]\d+)?\s*(?:g|gam|ml|cc|đơn\s*vị|viên|ống|gói|giọt|lần\s*(?:/|mỗi|một|trong)\s*ngày)\b"
DELAY = (
    r"\bchờ|\bđợi|để\s*(đến|tới)\s*sáng|qua\s*đêm|theo\s*dõi\s*(thêm|tại\s*nhà|ở\s*nhà)|nghỉ\s*ngơi\s*(tại|ở)\s*nhà"
    r"|vài\s*(ngày|hôm)\s*(là|sẽ)|vài\s*(ngày|tuần)\s*tới|nếu\s*sau\b"
    r"|(trong|sau)\s*(vài|mấy|\d+|một|hai|ba|bốn|năm|bảy|mười)\s*(giờ|tiếng|ngày|hôm|tuần|tháng)"
)
NO_WAIT = (
    r"(đừng|không\s*nên|không\s*được)\s*(chờ|đợi|trì\s*hoãn)"  # "đừng chờ, đi cấp cứu ngay": not a delay
)
# reassurance: a small model cannot tell what is serious, so it never says a thing is not (unless it sends to care)
REASSURE = (
    r"tự\s*khỏi|tự\s*hết|không\s*(sao|đáng\s*lo|nguy\s*hiểm|nghiêm\s*trọng|có\s*gì\s*nghiêm\s*trọng)"
    r"|không\s*phải\s*(là\s*)?(dấu\s*hiệu|bệnh)\s*(gì\s*)?(nặng|nguy\s*hiểm|nghiêm\s*trọng)|bình\s*thường\s*thôi"
)
# things that are not medicines, taken or put on the body: household products swallowed, leaves on a wound, ...
HARMFUL = (
    r"(uống|nuốt|ăn|ngậm)[^.?!]{0,30}(sữa\s*tắm|dầu\s*gió|xà\s*phòng|dầu\s*hỏa|xăng|thuốc\s*tẩy|nước\s*javel|javen"
    r"|nước\s*rửa\s*(chén|bát)|dầu\s*(máy|nhớt)|cồn\s*(90|70|y\s*tế)|long\s*não|băng\s*phiến)"
    r"|đắp\s*lá|hút\s*nọc|gây\s*nôn|bôi\s*kem\s*đánh\s*răng|chích\s*lể|bóp\s*rượu"
    r"|(chọc|ngoáy|hút)[^.?!]{0,20}(mũi|tai)\s*sâu|(đắp|bôi|trát|ngâm)[^.?!]{0,10}\bbùn"
    r"|không\s*ăn\s*uống\s*gì|nhịn\s*(cả\s*)?(ăn\s*)?uống"  # no food or drink: shock in dengue, dehydration
)
# herbal and folk remedies (thuốc nam, thuốc bắc, thảo dược, ...): never a treatment for a warning sign
HERBAL = (
    r"thuốc\s*(nam|bắc|đông\s*y|dân\s*gian|lá|gia\s*truyền)|thảo\s*dược|bài\s*thuốc|đông\s*y|cây\s*thuốc"
    r"|lá\s*(cây|thuốc)"
)
ADVISE_AGAINST = (
    r"\b(?:không|đừng|tránh|chớ)\s*(?:nên\s*|được\s*)?(?:tự\s*)?(?:uống|dùng|sử\s*dụng|đắp|bôi)\b"
)
HOME_CARE = (
    r"\b(?:dùng|uống|bôi|xoa|chườm|nghỉ\s*ngơi|theo\s*dõi|ở\s*nhà|tại\s*nhà|cho\s*(?:bé|con|mẹ|bố)\s*uống)\b"
)
URGENT = r"\b(?:ngay|lập\s*tức|115|cấp\s*cứu)\b"  # sends the patient to care now
SKIP_CARE = (
    r"(không|chưa)\s*cần\s*(phải\s*)?(đi\s*khám|đến\s*bệnh\s*viện|gặp\s*bác\s*sĩ|cấp\s*cứu|vào\s*viện|đi\s*viện"
    r"|nhập\s*viện|lo)"
    r"|(đừng|không\s*nên|chớ)\s*(tự\s*)?(đi|vào|đến|tới)\s*(bệnh\s*)?viện|(đừng|không\s*nên|chớ)\s*gọi\s*(cấp\s*cứu|115)"
)
# a short number given as the one to call (gọi 192, số cấp cứu là 911, ...): the emergency number must be 115
CALLED_NUMBER = re.compile(
    r"((?:\bgọi|\bbấm|\bquay\s*số|\bbáo(?:\s*ngay)?(?:\s*(?:với|cho|tới|đến))?|\bsố\s*(?:điện\s*thoại\s*)?(?:cấp\s*cứu|khẩn\s*cấp)|\bcấp\s*cứu|\btổng\s*đài)"
    r"(?:\s+(?:ngay|ngay\s*lập\s*tức|hôm\s*nay|số|điện\s*thoại|cấp\s*cứu|khẩn\s*cấp|tổng\s*đài|là|theo|đến|tới|cho))*"
    r"\s*[:\-(]?\s*)(?!24\s*/\s*7)(\d{2,4}(?:\s*/\s*\d{2,4})*)\b(?![.,\s]?\d)",  # and 192/154: every number of the list
    re.IGNORECASE,
)
CARE = r"bác\s*sĩ|đi\s*khám|khám\s*bệnh|cơ\s*sở\s*y\s*tế|bệnh\s*viện|phòng\s*khám|trạm\s*y\s*tế|cấp\s*cứu|115"

NOTICE = (
    "⚠️ Điều bạn mô tả ({signs}) có thể là dấu hiệu cấp cứu. Hãy gọi ngay 115 hoặc đến khoa cấp cứu gần nhất, "
    "đừng chờ xem có đỡ không.\n\n"
)
NO_DOSE = (
    "Thuốc kê đơn và liều dùng phải do bác sĩ chỉ định sau khi khám; đừng tự dùng, tự đổi liều hay tự ngưng."
)
SEE_A_DOCTOR = "Nếu triệu chứng kéo dài hoặc nặng lên, bạn nên đi khám bác sĩ."

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")  # a sentence ends at . ! ? … before a space, or a new line


def _has(pattern: str, text: str) -> bool:
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def red_flags(question: str) -> list[str]:
    """The warning signs of an emergency that ``question`` describes, by name."""
    text = question.lower()
    return [name for name, pattern in RED_FLAGS.items() if _has(pattern, text)]


def gives_dose(sentence: str) -> bool:
    s = sentence.lower()
    return _has(DOSE_STRONG, s) or (_has(DOSE_WEAK, s) and _has(DRUG_CUE, s))


def prescribes(sentence: str) -> bool:
    """Tells the patient to take, start or stop a prescription drug, with no doctor in the sentence."""
    s = sentence.lower()
    return _has(PRESCRIPTION, s) and _has(USE, s) and not _has(ADVISED, s)


# ------------------------------------------------------------------------------------------- the guard


@dataclass
class MedicalGuard:
    """One answer's guard: :meth:`opening` first, then :meth:`feed` each piece, then :meth:`finish`."""

    question: str
    flags: list[str] = field(init=False)
    changes: list[str] = field(default_factory=list)  # what it did, for the log (no text of the patient's)
    _held: str = ""
    _said_no_dose: bool = False
    _mentions_care: bool = False
    _any: bool = False

    def __post_init__(self) -> None:
        self.flags = red_flags(self.question)

    def opening(self) -> str:
        if not self.flags:
            return ""
        self.changes.append(f"emergency notice ({', '.join(self.flags)})")
        self._mentions_care = True
        return NOTICE.format(signs=", ".join(self.flags))

    def feed(self, piece: str) -> str:
        self._held += piece
        out = []
        while True:
            m = _SENTENCE_END.search(self._held)
            if m is None:
                break
            sentence, gap = self._held[: m.start()], m.group()
            self._held = self._held[m.end() :]
            out.append(self._sentence(sentence, gap))
        return "".join(out)

    def finish(self) -> str:
        tail = self._sentence(self._held, "") if self._held else ""
        self._held = ""
        if (self._any or self.changes) and not self._mentions_care:  # (all dropped: the referral still)
            self.changes.append("referral added")
            tail += "\n\n" + SEE_A_DOCTOR  # (not stripped first: what was held may already be streamed)
        if self.changes:
            log.info("medical guard: %s", "; ".join(self.changes))
        return tail

    def _sentence(self, sentence: str, gap: str) -> str:
        core = sentence.strip()
        first = not self._any and not self._said_no_dose  # nothing of the answer out yet: no whitespace first
        if not core:
            return "" if first else sentence + gap
        # the whitespace around a sentence is always kept: where a piece ends moves it between the sentence
        # and the gap, and the streamed answer must join to the whole one
        start = sentence.index(core)
        lead, trail = ("" if first else sentence[:start]), sentence[start + len(core) :]
        dropped = "" if first else lead + trail + gap
        s = core.lower()
        # waiting, where the question or the sentence itself names a warning sign ("nếu sau hai tuần vẫn khó thở")
        waits = (self.flags or red_flags(s)) and _has(DELAY, s) and not _has(NO_WAIT, s)
        if waits or _has(SKIP_CARE, s):
            self.changes.append("a sentence delaying care dropped")
            return dropped
        if _has(REASSURE, s) and not _has(CARE, s):
            self.changes.append("a reassurance dropped")
            return dropped
        if _has(HARMFUL, s):
            self.changes.append("a harmful remedy dropped")
            return dropped
        sign = red_flags(s)
        herbal_use = _has(HERBAL, s) and _has(USE, s) and not _has(ADVISE_AGAINST, s)
        if (self.flags or sign) and herbal_use:  # "uống đủ thuốc nam theo liều", not "không dùng thuốc nam"
            self.changes.append("a herbal remedy for a warning sign dropped")
            return dropped
        if sign and _has(HOME_CARE, s) and not _has(URGENT + "|" + CARE, s):  # "not alert? give paracetamol"
            self.changes.append("home care of a warning sign dropped")
            return dropped
        if gives_dose(core) or prescribes(core):
            self.changes.append("a prescription or dose replaced")
            if self._said_no_dose:
                return dropped
            self._said_no_dose = self._mentions_care = self._any = True
            return lead + NO_DOSE + trail + gap
        fixed = CALLED_NUMBER.sub(lambda m: m.group(1) + EMERGENCY_NUMBER, core)
        if fixed != core:
            self.changes.append("emergency number corrected")
            core = fixed
        self._mentions_care = self._mentions_care or _has(CARE, core.lower())
        self._any = True
        return lead + core + trail + gap


def make_guard(kind: str, question: str) -> MedicalGuard | None:
    if kind == "off":
        return None
    if kind == "medical":
        return MedicalGuard(question)
    raise ValueError(f"unknown guard {kind!r}; known: {', '.join(GUARDS)}")


def guard_text(kind: str, question: str, text: str) -> str:
    """``text`` (a whole answer to ``question``) as the guard ``kind`` lets it through."""
    guard = make_guard(kind, question)
    if guard is None:
        return text
    return guard.opening() + guard.feed(text) + guard.finish()
