from train.quality import is_vietnamese


def test_vietnamese_detector():
    assert is_vietnamese("Hà Nội là thủ đô của Việt Nam.")
    assert is_vietnamese("Bạn nên uống nhiều nước và nghỉ ngơi. ```python\nprint(1)\n```")
    assert not is_vietnamese("The capital of Vietnam is Hanoi.")
    assert not is_vietnamese("")
    assert not is_vietnamese("12345 67")
