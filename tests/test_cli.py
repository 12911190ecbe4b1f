"The command line: `python -m deepcluster_nb train|report`, its options generated from TrainConfig, and its errors."
import json, sys
import pytest
from conftest import ROOT, run

CLI = [sys.executable, "-m", "deepcluster_nb"]


def test_help_lists_every_training_field_with_type_and_help():
    from deepcluster_nb.train import config_help
    from deepcluster_nb.cli import metavar
    out = run(CLI + ["train", "--help"], timeout=120).stdout
    flat = " ".join(out.split())
    for name, (anno, default, text) in config_help().items():
        assert f"--{name} {metavar(anno)}" in flat or f"--{name} [{metavar(anno)}]" in flat, name
        assert " ".join(text.split()[:4]) in flat, (name, text)
    top = run(CLI + ["--help"], timeout=120).stdout
    assert "train" in top and "report" in top


def parsed(*argv):
    "The TrainConfig the train command builds from `argv` (without training)."
    from deepcluster_nb.cli import parse_command
    from deepcluster_nb.train import TrainConfig
    command, values = parse_command(["train", *argv])
    assert command == "train"
    return TrainConfig.parse(**values)


def test_values_are_parsed_like_papermill_parameters():
    c = parsed("--resume", "--compile", "no", "--progress", "0", "--amp", "auto", "--epochs", "3", "--lr", "3e-4",
               "--image_size", "native", "--hparams", "{tau_i: 0.5}", "--batch-size", "64")
    assert (c.resume, c.compile, c.progress, c.amp, c.epochs, c.lr) == (True, False, False, None, 3, 3e-4)
    assert (c.image_size, c.hparams, c.batch_size) == ("native", {"tau_i": 0.5}, 64)
    assert parsed("--resume", "--epochs", "2").resume is True          # a boolean alone, followed by an option
    assert parsed("--overwrite=yes").overwrite is True
    assert parsed().epochs is None                                     # unset: the method's settings table decides


@pytest.mark.parametrize("argv,message", [
    (["--epoch", "2"], "--epoch (did you mean --epochs?)"),
    (["--epo", "2"], "--epo (did you mean --epochs?)"),                # no abbreviations
    (["--hparam", "{tau_i: 0.5}"], "(did you mean --hparams?)"),
    (["--resume", "maybe"], "resume must be true or false"),
    (["--epochs", "ten"], "epochs must be an integer"),
    (["--hparams", "{tau: 1}", "--epochs", "1"], "Unknown hyperparameter(s) ['tau'] for method 'cc'"),
    (["--backbone", "vgg", "--epochs", "1"], "Valid: small_cnn"),
])
def test_bad_options_stop_with_a_message(argv, message, capsys, tmp_path):
    from deepcluster_nb.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "--out_dir", str(tmp_path / "run"), "--progress", "false", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err, err
    if "did you mean" in message: assert "Valid options: --method --dataset" in err and "--hparams" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_resume_refuse_and_report(tmp_path):
    "A 2-epoch run from a shell, resumed to 3 epochs, a third call refused, then the report of the folder."
    d = tmp_path / "cc_digits"
    r = run(CLI + ["train", "--method", "cc", "--dataset", "digits", "--epochs", "2", "--batch_size", "128", "--device", "cpu",
                   "--out_dir", str(d), "--progress", "false", "--eval_every", "1", "--hparams", "{tau_i: 0.4}"], timeout=600)
    m = json.loads((d / "metrics.json").read_text())
    assert (m["epochs"], m["steps"], m["world_size"]) == (2, 2 * (1797 // 128), 1)
    cfg = json.loads((d / "config.json").read_text())["config"]
    assert cfg["hparams"]["tau_i"] == 0.4 and cfg["batch_size"] == 128
    assert "acc " in r.stdout and "lr = 0.002" in r.stdout                  # the result and where each setting came from

    from deepcluster_nb.cli import main
    assert main(["train", "--method", "cc", "--epochs", "3", "--batch_size", "128", "--device", "cpu", "--out_dir", str(d),
                 "--progress", "false", "--eval_every", "1", "--hparams", "{tau_i: 0.4}", "--resume"]) == 0
    assert [h["epoch"] for h in json.loads((d / "history.json").read_text())] == [1, 2, 3]
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "1", "--out_dir", str(d), "--progress", "false"])
    assert e.value.code == 2

    r = run(CLI + ["report", str(d), "--device", "cpu", "--tsne_samples", "0", "--kmeans", "false", "--gallery_size", "4"],
            timeout=300)
    rep = json.loads((d / "report.json").read_text())
    assert rep["epoch"] == 3 and set(rep["metrics"]) == {"head"} and "tsne" not in rep["figures"]
    assert "collapsed: " in r.stdout and "| this run | cluster head |" in r.stdout


def test_report_errors(tmp_path, capsys):
    from deepcluster_nb.cli import main
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "nothing_here")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "--tsne_sample", "0"])
    assert "did you mean --tsne_samples?" in capsys.readouterr().err
