from edgeslim.hardware import Target, int8_defaults, int8_speed_warning

AVX2 = Target("x86", avx2=True, vnni=False, amx=False, arm_dot=False)
VNNI = Target("x86", avx2=True, vnni=True, amx=False, arm_dot=False)
ARM_DOT = Target("arm", avx2=False, vnni=False, amx=False, arm_dot=True)
ARM_OLD = Target("arm", avx2=False, vnni=False, amx=False, arm_dot=False)


def test_names() -> None:
    assert [t.name for t in (AVX2, VNNI, ARM_DOT, ARM_OLD)] == ["avx2", "avx512_vnni", "arm64-dotprod", "arm"]


def test_reduce_range_only_without_vnni_on_x86() -> None:
    assert int8_defaults(AVX2)["reduce_range"] is True
    assert int8_defaults(VNNI)["reduce_range"] is False
    assert int8_defaults(ARM_DOT)["reduce_range"] is False
    assert all(int8_defaults(t)["activation_type"] == "U8" for t in (AVX2, VNNI, ARM_DOT))


def test_speed_warnings() -> None:
    assert int8_speed_warning(AVX2, "U8") is None
    assert "6x slower" in (int8_speed_warning(AVX2, "S8") or "")
    assert int8_speed_warning(VNNI, "S8") is None
    assert "dot-product" in (int8_speed_warning(ARM_OLD, "U8") or "")
    assert "AVX2" in (int8_speed_warning(Target("x86", False, False, False, False), "U8") or "")
