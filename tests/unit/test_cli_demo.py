"""`albireo demo`: the embedded main job prints its summary; its default inputs are real samples."""

from __future__ import annotations

import re

from click.testing import CliRunner

from broker.cli import main
from broker.ops.samples import demo_inputs


def test_demo_summary_on_real_packets(tmp_path, shared_data, lsst_samples):
    out = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path / "w"), "--no-catalogs",
                                    "--alerts", str(shared_data / "ztf"), "--alerts", str(lsst_samples["11.1"])])
    assert out.exit_code == 0, out.output
    text = out.output
    messages = int(re.search(r"messages read\s+(\d+)", text).group(1))
    accepted = int(re.search(r"packets decoded\s+(\d+)", text).group(1))
    rejected = int(re.search(r"rejected\s+(\d+)", text).group(1))
    assert messages == 54 and rejected == 1 and accepted == 53
    assert "bad_magic: 1" in text
    assert re.search(r"throughput\s+[\d,]+ packets/s", text)
    assert re.search(r"tags per stream\s+.*high_snr=\d+", text)
    assert (tmp_path / "w" / "streams" / "albireo.dlq.avro-stream").exists()
    loci = int(re.search(r"store: (\d+) loci", text).group(1))
    assert f"index: {loci} locus documents" in text


def test_default_inputs_are_the_bundled_real_samples(tmp_path, shared_data):
    inputs = demo_inputs(tmp_path)
    names = [str(p) for p in inputs]
    assert names[0].endswith(".avro-stream")  # antares-devkit's real ZTF locus, re-encoded
    assert sum("sample_data/fakeAlert.avro" in n for n in names) >= 14  # every Rubin schema version
    assert names[-1] == str(shared_data / "ztf")
