"""Seq2Seq: attention, teacher forcing paths, scheduled sampling, greedy and beam search,
the autoencoder, learning, save/load."""

import math

import pytest
import torch
from torch.func import functional_call

from rnnkit.errors import CheckpointError
from rnnkit.models import Attention, SamplingSchedule, Seq2Seq, Seq2SeqConfig, sequence_autoencoder, sequence_loss
from rnnkit.models.attention import SCORES
from rnnkit.tasks.seq2seq_train import Seq2SeqTrainConfig, load_run, save_run, train_seq2seq, translate

ATTENTIONS = ["additive", "dot", "general", "concat", "none"]



def small(attention="general", cell="lstm", **kw):
    cfg = dict(src_vocab_size=12, tgt_vocab_size=11, embedding_size=8, hidden_size=16, attention=attention, cell=cell)
    cfg.update(kw)
    return Seq2Seq(Seq2SeqConfig(**cfg))


def batch(B=4, S=6, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([S, 2, S - 1, 1][:B])
    src = torch.randint(4, 12, (B, S), generator=g)
    src[torch.arange(S).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    tgt_in = torch.randint(4, 11, (B, T), generator=g)
    tgt_in[:, 0] = 1
    return src, lengths, tgt_in


@pytest.mark.parametrize("score", SCORES)
def test_attention_weights_sum_to_one_and_ignore_padding(score):
    att = Attention(score, 6, 6)
    q, keys = torch.randn(3, 4, 6), torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    c, w = att(q, keys, att.prepare_keys(keys), mask)
    torch.testing.assert_close(w.sum(2), torch.ones(3, 4))
    assert (w[~mask.unsqueeze(1).expand_as(w)] == 0).all()
    torch.testing.assert_close(c[2], keys[2, :1].expand(4, 6))  # one real position: the context is it
    keys2 = keys.clone()
    keys2[1, 2:] = 100.0  # whatever sits in padded positions changes nothing
    c2, w2 = att(q, keys2, att.prepare_keys(keys2), mask)
    torch.testing.assert_close(c2, c)
    torch.testing.assert_close(w2, w)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_forward_shapes_and_attention_rows(attention, bidirectional):
    model = small(attention, bidirectional=bidirectional)
    src, lengths, tgt_in = batch()
    logits, att = model(src, tgt_in, lengths)
    assert logits.shape == (4, 5, 11)
    if attention == "none":
        assert att is None
    else:
        assert att.shape == (4, 5, 6)
        torch.testing.assert_close(att.sum(2), torch.ones(4, 5))
        assert (att[3, :, 1:] == 0).all() and (att[1, :, 2:] == 0).all()


@pytest.mark.parametrize("attention", ["dot", "general", "concat", "none"])
def test_one_call_teacher_forcing_equals_step_by_step(attention):
    model = small(attention, input_feeding=False, cell="gru")
    model.eval()
    src, lengths, tgt_in = batch()
    logits, att = model(src, tgt_in, lengths)  # the one-call path
    mem, state = model.encode(src, lengths)
    steps, atts = [], []
    for t in range(tgt_in.shape[1]):
        lg, state, _, a = model._step(tgt_in[:, t], state, None, mem)
        steps.append(lg)
        atts.append(a)
    torch.testing.assert_close(logits, torch.stack(steps, 1))
    if att is not None:
        torch.testing.assert_close(att, torch.stack(atts, 1))


def test_padding_does_not_change_a_sequence_result():
    model = small("additive", cell="gru")
    model.eval()
    src, lengths, _ = batch()
    together = model.greedy(src, lengths, max_len=7)
    alone = model.greedy(src[1:2, :2], lengths[1:2], max_len=7)
    n = int(alone.lengths[0])
    assert torch.equal(together.tokens[1, :n], alone.tokens[0, :n])
    torch.testing.assert_close(together.attention[1, :n, :2], alone.attention[0, :n])


def test_gradients_through_the_step_by_step_decoder_float64():
    model = small("additive", cell="lstm", hidden_size=4, embedding_size=3).double()
    src, lengths, tgt_in = batch(T=3)
    tgt_out = torch.roll(tgt_in, -1, 1)
    names = ["encoder.weight_hh_l0", "decoder.weight_hh_l0", "bridge.1.weight", "attention.v.weight"]
    params = dict(model.named_parameters())

    def loss(*ws):
        p = {**params, **dict(zip(names, ws))}
        logits, _ = functional_call(model, p, (src, tgt_in, lengths))
        return sequence_loss(logits, tgt_out, 0)

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_beam_search_of_width_one_is_greedy(attention):
    model = small(attention, cell="gru")
    src, lengths, _ = batch(seed=3)
    g = model.greedy(src, lengths, max_len=9)
    b = model.beam_search(src, lengths, beam_size=1, max_len=9)
    assert torch.equal(g.tokens, b.tokens) and torch.equal(g.lengths, b.lengths)
    torch.testing.assert_close(g.scores, b.scores)
    if attention != "none":
        torch.testing.assert_close(g.attention, b.attention)


@pytest.mark.parametrize("attention", ["general", "additive"])
def test_a_beam_wide_enough_is_exact_search(attention):
    """V = 5 and 3 steps: a beam of 25 keeps every prefix, so it must return the most
    probable output among all 21 EOS-terminated and 64 unfinished ones."""
    import itertools

    torch.manual_seed(2)
    model = small(attention, cell="lstm", tgt_vocab_size=5)
    model.eval()
    src = torch.tensor([[5, 7, 9]])

    def logprob(tokens):
        tgt_in = torch.tensor([[1, *tokens[:-1]]])
        logits, _ = model(src, tgt_in)
        logp = logits[0].log_softmax(1)
        return float(sum(logp[t, y] for t, y in enumerate(tokens)))

    others = [0, 1, 3, 4]
    outputs = [[*p, 2] for n in range(3) for p in itertools.product(others, repeat=n)]
    outputs += [list(p) for p in itertools.product(others, repeat=3)]
    with torch.no_grad():
        best = max(outputs, key=logprob)
        b = model.beam_search(src, beam_size=25, max_len=3, length_penalty=0.0)
        assert b.tokens[0, : int(b.lengths[0])].tolist() == best
        assert float(b.scores[0]) == pytest.approx(logprob(best), abs=1e-5)
        rows = b.attention[0].sum(1)
        n = int(b.lengths[0])
        torch.testing.assert_close(rows[:n], torch.ones(n))


def test_scheduled_sampling_schedules():
    assert SamplingSchedule("linear", k=1.0, c=0.1, epsilon_min=0.2).teacher_prob(3) == pytest.approx(0.7)
    assert SamplingSchedule("linear", k=1.0, c=0.1, epsilon_min=0.2).teacher_prob(30) == pytest.approx(0.2)
    assert SamplingSchedule("exponential", k=0.9).teacher_prob(2) == pytest.approx(0.81)
    assert SamplingSchedule("inverse_sigmoid", k=10).teacher_prob(10) == pytest.approx(10 / (10 + math.e))
    assert SamplingSchedule().sampling_prob(10**6) == 0.0
    with pytest.raises(ValueError, match="exponential"):
        SamplingSchedule("exponential", k=1.5)


def test_sampling_probability_one_ignores_the_ground_truth_after_the_first_token():
    model = small("general", cell="gru")
    src, lengths, tgt_in = batch()
    other = tgt_in.clone()
    other[:, 1:] = torch.randint(4, 11, other[:, 1:].shape)
    a, _ = model(src, tgt_in, lengths, sampling_prob=1.0, generator=torch.Generator().manual_seed(1))
    b, _ = model(src, other, lengths, sampling_prob=1.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    c, _ = model(src, other, lengths, sampling_prob=0.0)
    assert not torch.allclose(a, c)


def test_config_errors():
    with pytest.raises(ValueError, match="even hidden_size"):
        small(hidden_size=15)
    with pytest.raises(ValueError, match="attention must be one of"):
        small("luong")
    with pytest.raises(ValueError, match="unknown cell"):
        small(cell="nope")
    model = small()
    with pytest.raises(ValueError, match="source lengths"):
        model.greedy(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="beam_size"):
        model.beam_search(torch.ones(2, 3, dtype=torch.long), beam_size=0)


def test_every_registered_cell_builds_a_seq2seq():
    from rnnkit.layers.registry import names as cell_names

    src, lengths, tgt_in = batch()
    for cell in cell_names():
        logits, _ = small("additive", cell=cell)(src, tgt_in, lengths)
        assert logits.shape == (4, 5, 11) and torch.isfinite(logits).all()


def test_sequence_autoencoder_learns_to_reconstruct():
    import random

    from rnnkit.data.seq2seq_tasks import Vocab, make_batch, reverse_task

    pairs = [(s, s) for s, _ in reverse_task(3000, random.Random(0), 2, 4)]
    vocab = Vocab.build(s for s, _ in pairs)
    torch.manual_seed(0)
    model = sequence_autoencoder(len(vocab), hidden_size=48, embedding_size=16)
    assert model.config.attention == "none"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(90):
        b = make_batch(pairs[step * 32 : (step + 1) * 32], vocab, vocab)
        logits, _ = model(b.src, b.tgt_in, b.src_lengths)
        loss = sequence_loss(logits, b.tgt_out, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert model.encode_vector(b.src, b.src_lengths).shape == (32, 48)


def test_learns_reversal_well_above_chance_and_survives_save_load(tmp_path):
    config = Seq2SeqTrainConfig(task="reverse", model=Seq2SeqConfig(4, 4, hidden_size=64, embedding_size=32,
                                                                    attention="additive"),
                                max_steps=130, max_time=None, eval_every=130, test_size=200)
    run = train_seq2seq(config)
    m = run.loop.final.metrics
    assert m["exact_match"] > 0.3 and m["token_accuracy"] > 0.7  # chance: ~0 and ~0.1
    save_run(run, tmp_path / "run", config)
    model, sv, tv = load_run(tmp_path / "run")
    texts = [s for s, _ in run.test_pairs[:20]]
    assert [o for o, _, _ in translate(model, texts, sv, tv)] == [o for o, _, _ in
                                                                   translate(run.model, texts, sv, tv)]
    (tmp_path / "run" / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_run(tmp_path / "run")
