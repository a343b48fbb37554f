"""The medical guard (vichat.safety): what it changes in an answer, streamed or whole, and through the registry."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vichat.errors import ViChatError
from vichat.generation import GenerationSettings
from vichat.registry import Registry
from vichat.safety import NO_DOSE, SEE_A_DOCTOR, MedicalGuard, guard_text, make_guard, red_flags

CHEST = "Bố tôi 60 tuổi, cứ leo cầu thang là tức ngực, lan ra tay trái. Có nên đợi đến sáng mai không ạ?"
RASH = "Tôi bị nấm da ở bẹn, ngứa nhiều, tôi nên làm gì?"


def guarded(question: str, answer: str) -> str:
    return guard_text("medical", question, answer)


@pytest.mark.parametrize(
    ("question", "sign"),
    [
        (CHEST, "đau hoặc tức ngực"),
        ("Mẹ tôi tự nhiên méo miệng, nói ngọng, tay phải yếu hẳn đi.", "dấu hiệu đột quỵ"),
        ("Con tôi 2 tuổi sốt rồi co giật khoảng một phút.", "co giật"),
        ("Sáng nay tôi nôn ra máu hai lần.", "chảy máu nặng"),
        ("Tôi đau đầu dữ dội đột ngột, chưa bao giờ bị như vậy.", "đau đầu dữ dội đột ngột"),
        ("Tôi mang thai 30 tuần và bị ra máu từ tối qua.", "dấu hiệu nặng khi mang thai"),
        ("Dạo này tôi hay nghĩ đến chuyện tự tử.", "ý nghĩ tự tử"),
        ("Cháu nhà tôi uống nhầm thuốc của bà.", "ngộ độc hoặc quá liều"),
        ("Ăn tôm xong tôi bị sưng môi và khó thở.", "khó thở"),
        ("Từ sáng tôi đau bụng, giờ đau khu trú ở bụng dưới bên phải, sốt nhẹ.", "đau bụng cấp"),
        ("Cháu 15 tuổi, tự nhiên đau dữ dội ở tinh hoàn trái, bìu sưng.", "đau tinh hoàn"),
        ("Tôi bị chó lạ cắn vào chân, chảy máu.", "bị động vật cắn"),
        ("Bé 10 tháng tiêu chảy, số lần thay tã ướt giảm hẳn, khóc không ra nước mắt.", "dấu hiệu mất nước"),
        ("Con tôi mới sinh 6 ngày, da vàng lan xuống bụng.", "vàng da lan ở trẻ sơ sinh"),
        ("Tối qua mắt trái tôi đột nhiên đau nhức và nhìn mờ hẳn.", "mắt đau hoặc mờ đột ngột"),
    ],
)
def test_warning_signs_in_the_question_open_the_answer_with_a_call_to_115(question, sign):
    assert sign in red_flags(question)
    out = guarded(question, "Bạn nên đi khám bác sĩ.")
    assert out.startswith("⚠️") and "115" in out.split("\n")[0] and sign in out.split("\n")[0]
    assert out.endswith("Bạn nên đi khám bác sĩ.")


@pytest.mark.parametrize(
    "question",
    [
        RASH,
        "Tôi bị ho ba ngày nay, tôi nên làm gì?",
        "Ăn gì để tốt cho tim mạch?",
        "Tôi hay bị đau đầu nhẹ khi thiếu ngủ.",
        "Cách chăm sóc vết bỏng nhẹ do nước sôi?",
        "Bố tôi từng bị đột quỵ, tôi nên tầm soát những gì?",  # a family history, not a sign now
        "Mỗi tháng tôi bị vài cơn đau nửa đầu dữ dội như mọi khi, có cách nào phòng không?",  # not sudden
    ],
)
def test_ordinary_questions_get_no_emergency_notice(question):
    assert red_flags(question) == []
    answer = "Bạn nên uống đủ nước và nghỉ ngơi. Nếu không đỡ sau vài ngày, hãy đi khám bác sĩ."
    assert guarded(question, answer) == answer  # nothing to change: the same text


def test_with_warning_signs_waiting_is_dropped_and_urging_is_kept():
    answer = (
        "Có thể là cơn đau thắt ngực. Hãy chờ đến sáng rồi đi khám. Cứ nghỉ ngơi tại nhà và theo dõi thêm. "
        "Đừng chờ đợi, hãy đến bệnh viện ngay."
    )
    out = guarded(CHEST, answer)
    assert "chờ đến sáng" not in out and "nghỉ ngơi tại nhà" not in out
    assert "Có thể là cơn đau thắt ngực." in out and "Đừng chờ đợi, hãy đến bệnh viện ngay." in out
    for delay in (
        "Ở mức độ hiện tại, anh chưa cần cấp cứu.",
        "Hãy đến khoa cấp cứu trong vài ngày tới.",
        "Người bị thương nặng phải đợi đến vài ngày mới lên viện ngay lập tức.",
    ):
        assert (
            guarded(CHEST, f"Có thể là đau thắt ngực. {delay}").rstrip().endswith("Có thể là đau thắt ngực.")
        )
    # a warning sign of the answer's own tied to waiting: dropped whatever the question
    out = guarded(
        "Tôi bị cúm.", "Nghỉ ngơi, uống nhiều nước. Nếu sau hai tuần vẫn còn khó thở thì đi cấp cứu."
    )
    assert (
        out == "Nghỉ ngơi, uống nhiều nước. \n\n" + SEE_A_DOCTOR
    )  # (the space before the dropped sentence stays)
    # without warning signs the same words are left alone (waiting a few days is fine for a cough)
    cough = (
        "Bạn cứ nghỉ ngơi tại nhà và theo dõi thêm. Nếu sốt cao thì đi khám."  # (a sign of the answer's own)
    )
    assert guarded("Tôi bị ho nhẹ.", cough) == cough


def test_telling_to_skip_care_is_always_dropped():
    out = guarded(RASH, "Bệnh này không cần đi khám. Giữ vùng da khô thoáng.")
    assert "không cần đi khám" not in out and "Giữ vùng da khô thoáng." in out
    for skip in (
        "Anh đừng tự đi viện hay gọi báo động xã hội.",
        "Không nên vào bệnh viện lúc này.",
        "Đừng gọi 115.",
    ):
        out = guarded(RASH, f"{skip} Giữ vùng da khô thoáng.")
        assert skip not in out and "Giữ vùng da khô thoáng." in out


@pytest.mark.parametrize(
    "sentence",
    [
        "Bạn nên uống kháng sinh amoxicillin trong 7 ngày.",
        "Hãy tiêm insulin tại nhà để hạ mỡ máu.",
        "Uống paracetamol 500 mg mỗi 6 giờ.",
        "Ngưng thuốc huyết áp khi thấy chóng mặt.",
        "Dùng prednisolon 2 viên mỗi sáng.",
        "Bôi kem corticoid lên vùng da bị nấm.",
        "Trong lúc chờ, dùng đủ thuốc hạ glucose theo liều ghi trên hướng dẫn.",
        "Anh thử nhổ bỏ thuốc chống tiểu đường vài hôm.",  # the fourth safety review's answers
        "Cho bé uống đủ thuốc hạ áp thông thường.",
        "Ngừng thuốc điều trị đái tháo đường khi ăn ít.",
    ],
)
def test_prescriptions_and_doses_are_replaced_by_a_referral(sentence):
    out = guarded(RASH, f"Giữ vùng da khô thoáng. {sentence} Mặc quần áo rộng.")
    assert sentence not in out and NO_DOSE in out
    assert out == f"Giữ vùng da khô thoáng. {NO_DOSE} Mặc quần áo rộng."


def test_a_doctor_in_the_sentence_makes_a_drug_mention_fine_and_the_referral_is_said_once():
    fine = "Nếu bác sĩ chỉ định kháng sinh, hãy uống đủ liệu trình."
    assert guarded(RASH, fine) == fine
    out = guarded(RASH, "Uống amoxicillin 500 mg. Thêm 2 viên cefuroxim buổi tối. Giữ da khô.")
    assert out.count(NO_DOSE) == 1 and out.endswith("Giữ da khô.")
    water = "Uống 2 lít nước mỗi ngày và ăn thêm 200 g rau."  # numbers, but no drug: not a dose
    assert guarded("Tôi hay bị táo bón.", water) == water + "\n\n" + SEE_A_DOCTOR


@pytest.mark.parametrize(
    ("said", "fixed"),
    [
        ("Hãy gọi 911 ngay hoặc số cấp cứu 112.", "Hãy gọi 115 ngay hoặc số cấp cứu 115."),
        ("Gọi ngay 192 để được hỗ trợ.", "Gọi ngay 115 để được hỗ trợ."),  # numbers the Doctor made up
        ("Gọi cấp cứu 195!", "Gọi cấp cứu 115!"),
        ("Số cấp cứu là 113, hãy đến bệnh viện.", "Số cấp cứu là 115, hãy đến bệnh viện."),  # 113: the police
        ("Dấu hiệu cần báo ngay với 195/74.", "Dấu hiệu cần báo ngay với 115."),  # a list: all of it
        ("Hãy gọi 115/154 nếu bé li bì.", "Hãy gọi 115 nếu bé li bì."),
        ("Hãy đến khoa cấp cứu ngay hôm nay (170).", "Hãy đến khoa cấp cứu ngay hôm nay (115)."),
    ],
)
def test_a_wrong_number_to_call_becomes_115(said, fixed):
    assert guarded(CHEST, said).endswith(fixed)


@pytest.mark.parametrize(
    "kept",
    [
        "Năm 1999 có 113 ca nhưng bạn nên đi khám.",  # numbers, not ones to call
        "Gọi tổng đài 1900 1234 của bệnh viện để đặt lịch khám.",  # a long number: a hotline, left alone
        "Gọi 115 ngay.",
        "Khoa cấp cứu (24/7) luôn mở cửa, hãy đến khám.",
    ],
)
def test_other_numbers_are_left_alone(kept):
    assert guarded(RASH, kept) == kept


def test_reassurance_is_dropped_unless_it_sends_to_care():
    out = guarded(CHEST, "Không sao đâu, chỉ là mỏi cơ. Hãy đi cấp cứu ngay.")
    assert "Không sao" not in out and out.endswith("Hãy đi cấp cứu ngay.")
    out = guarded(
        "Tôi bị ho nhẹ.", "Đây không phải dấu hiệu nặng nào. Tình trạng này sẽ tự khỏi. Uống nhiều nước."
    )
    assert out == "Uống nhiều nước.\n\n" + SEE_A_DOCTOR
    calm = "Cảm lạnh thường tự khỏi, nếu sốt cao hãy đi khám bác sĩ."  # reassurance with a way to care: kept
    assert guarded("Tôi bị cảm lạnh.", calm) == calm


@pytest.mark.parametrize(
    "harmful",
    [
        "Cho anh uống một ít sữa tắm pha loãng và dầu gió.",
        "Đắp lá trầu không lên vết chó cắn.",
        "Hãy móc họng gây nôn ngay cho cháu.",
        "Bôi kem đánh răng lên vết bỏng.",
        "Khi khó thở, chọc hút ẩm mũi, tai sâu cho bé.",
        "Nếu thấy khó thở thì đắp bùn sủi lên ngực.",
        "Không ăn uống gì cho đến khi hết sốt.",
    ],
)
def test_harmful_home_remedies_are_dropped(harmful):
    out = guarded(RASH, f"{harmful} Hãy đi khám bác sĩ.")
    assert out == "Hãy đi khám bác sĩ."


def test_treating_a_warning_sign_at_home_is_dropped():
    out = guarded(
        RASH, "Nếu mẹ không tỉnh táo thì dùng paracetamol. Nếu bé co giật, cho bé uống nước chanh. Giữ ấm."
    )
    assert out == "Giữ ấm.\n\n" + SEE_A_DOCTOR
    urgent = "Nếu bé co giật, hãy đặt bé nằm nghiêng và gọi 115 ngay."  # a warning sign sent to care: kept
    assert guarded(RASH, urgent) == urgent


def test_herbal_remedies_are_dropped_where_there_is_a_warning_sign():
    stroke = "Mẹ tôi tự nhiên méo miệng, nói ngọng, tay phải yếu hẳn đi."
    out = guarded(
        stroke, "Chị phải uống đủ thuốc nam theo liều ghi trên hướng dẫn. Hãy đưa mẹ đi bệnh viện ngay."
    )
    assert "thuốc nam" not in out and out.endswith("Hãy đưa mẹ đi bệnh viện ngay.")
    # in the answer's own sentence too: "if the child convulses, give a herbal brew"
    out = guarded(RASH, "Nếu bé co giật thì cho bé uống bài thuốc lá cây. Giữ vùng da khô thoáng.")
    assert "bài thuốc" not in out
    # advice against them stays
    against = "Không dùng thuốc nam, hãy đưa mẹ đến khoa cấp cứu ngay."
    assert guarded(stroke, against).endswith(against)
    # with no warning sign anywhere, a herbal mention is left to the reader
    mild = "Có thể dùng thảo dược dịu da, nhưng nên hỏi bác sĩ da liễu."
    assert guarded(RASH, mild) == mild


def test_an_answer_the_guard_empties_still_sends_to_care():
    assert guarded(RASH, "Bệnh này tự khỏi.") == "\n\n" + SEE_A_DOCTOR


WORDS = st.sampled_from(
    [
        "Uống",
        "amoxicillin",
        "500",
        "mg.",
        "Hãy",
        "chờ",
        "đến",
        "sáng.",
        "gọi",
        "911",
        "bác sĩ",
        "ngay!",
        "Da",
        "khô",
        "…",
    ]
)
SPACES = st.sampled_from([" ", "  ", "\n", "\n\n", " \n"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(WORDS, SPACES), min_size=1, max_size=25),
    st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=40),
    st.sampled_from([CHEST, RASH]),
)
def test_streamed_pieces_join_to_the_whole_answer_guarded(words, cuts, question):
    text = "".join(w + s for w, s in words)
    whole = guard_text("medical", question, text)
    guard = MedicalGuard(question)
    out, at = [guard.opening()], 0
    for n in cuts * 10:
        if at >= len(text):
            break
        out.append(guard.feed(text[at : at + n]))
        at += n
    out.append(guard.feed(text[at:]))
    out.append(guard.finish())
    assert "".join(out) == whole


def test_unknown_guard_is_an_error():
    assert make_guard("off", CHEST) is None
    with pytest.raises(ValueError, match="known: off, medical"):
        make_guard("strict", CHEST)


# ------------------------------------------------------------------------------------ through the registry


@pytest.fixture()
def guarded_registry(tiny_models, tmp_path) -> Registry:
    data = {
        "bases": {"bloom": {"source": str(tiny_models["bloom"])}},
        "variants": [
            {"name": "raw", "base": "bloom", "template": "doctor", "adapter": str(tiny_models["bloom-b"])},
            {
                "name": "safe",
                "base": "bloom",
                "template": "doctor",
                "adapter": str(tiny_models["bloom-b"]),
                "guard": "medical",
            },
        ],
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return Registry.from_yaml(path, device="cpu", progress=lambda m: None)


GREEDY = GenerationSettings(max_new_tokens=24, temperature=0)


def test_a_guarded_variant_streams_the_notice_first_and_the_guarded_answer(guarded_registry):
    reg = guarded_registry
    raw = reg.generate("raw", CHEST, GREEDY)
    pieces = list(reg.stream("safe", CHEST, GREEDY))
    assert pieces[0].startswith("⚠️") and "115" in pieces[0]  # before the model's first word
    assert "".join(pieces).strip() == guard_text("medical", CHEST, raw).strip()
    assert reg.generate("safe", CHEST, GREEDY) == "".join(pieces).strip()
    both = reg.generate_batch("safe", [CHEST, RASH], GREEDY)
    assert both == [guard_text("medical", q, reg.generate("raw", q, GREEDY)).strip() for q in (CHEST, RASH)]


def test_compare_guards_only_the_guarded_side(guarded_registry):
    reg = guarded_registry
    texts = ["", ""]
    for i, piece in reg.stream_together([("raw", CHEST), ("safe", CHEST)], GREEDY):
        texts[i] += piece
    assert texts[0].strip() == reg.generate("raw", CHEST, GREEDY)
    assert texts[1].strip() == reg.generate("safe", CHEST, GREEDY) and texts[1].startswith("⚠️")


def test_a_bad_guard_in_the_variant_file_names_the_variant(tiny_models, tmp_path):
    data = {
        "bases": {"bloom": {"source": str(tiny_models["bloom"])}},
        "variants": [{"name": "x", "base": "bloom", "guard": "strict"}],
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ViChatError, match=r"variant 'x': guard must be one of off, medical \(got 'strict'\)"):
        Registry.from_yaml(path)


def test_the_shipped_doctor_variants_are_guarded():
    reg = Registry.from_yaml()
    doctors = [n for n in reg.names() if reg.variant(n).template == "doctor"]
    assert doctors and all(reg.variant(n).guard == "medical" for n in doctors)
    assert all(reg.variant(n).guard == "off" for n in reg.names() if reg.variant(n).template == "chat")
