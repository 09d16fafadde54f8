"""Batched decoding (`smollm2_nb.serve.batch`): several sequences through the C++ step together, each equal token for token
to the same sequence decoded alone, with sequences joining and leaving mid-way; the scheduler's streaming, stop strings,
end tokens, max_tokens, cancellation and full queue."""
import copy
import threading
import pytest
import torch
from smollm2_nb.model.config import get_config
from smollm2_nb.model.arch import SmolLM2
from smollm2_nb.serve.generate import generate, stream
from smollm2_nb.serve.decoders import prepare_for_inference, cpu_decode_kernels, cpu_isas, CPU_ISAS, ISA_ENV
from smollm2_nb.serve.batch import BatchDecoder, Scheduler, Request, QueueFull, Closed

@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return SmolLM2(get_config('tiny')).eval().requires_grad_(False)

def prompts(lengths):
    return [torch.randint(1, 49152, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in lengths]

def batched_greedy(bd, prompts, joins, lengths, chunk=None):
    "Greedy decoding of `prompts`, prompt i joining at step joins[i] (its prompt in chunks of `chunk` tokens) and leaving after lengths[i] tokens."
    out, live, todo = [[] for _ in prompts], {}, {}
    for step in range(1000):
        for i, j in enumerate(joins):
            if j == step: live[i] = bd.new(len(prompts[i]) + lengths[i]); todo[i] = list(prompts[i])
        if not live:
            if step > max(joins): break
            continue
        ids = list(live)
        work = [(live[i], todo[i][:chunk or len(todo[i])]) for i in ids]
        for i, (_, t) in zip(ids, work): todo[i] = todo[i][len(t):]
        want = [not todo[i] for i in ids]
        logits = iter(bd.forward(work, want))
        for i, w in zip(ids, want):
            if not w: continue
            out[i].append(int(next(logits).argmax()))
            if len(out[i]) == lengths[i]: del live[i]
            else: todo[i] = [out[i][-1]]
    return out

@pytest.mark.parametrize('mode', ['fp32', 'bf16', 'int8', 'int4'])   # int4: GGUF blocks (Q4_1 layers, a Q8_0 embedding)
def test_batched_greedy_is_each_sequence_decoded_alone(tiny, isa, mode):
    "Four sequences, joining at steps 0, 0, 3 and 11 and leaving at different lengths, one with a 40-token prompt run in chunks of 7: each sequence's greedy tokens are those of batch-1 decoding through the same step."
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), mode)
    bd = BatchDecoder(m, decoder)
    assert bd.batched
    ps, joins, lengths = prompts([5, 1, 17, 12]), [0, 0, 3, 11], [30, 9, 20, 25]
    alone = [generate(m, torch.tensor([p]), n, temperature=0, decoder=decoder)[0, len(p):].tolist() for p, n in zip(ps, lengths)]
    assert batched_greedy(bd, ps, joins, lengths) == alone, (isa, mode)
    assert batched_greedy(bd, ps, joins, lengths, chunk=7) == alone, (isa, mode)   # prompts spread over steps

@pytest.mark.parametrize('mode', ['fp32', 'bf16', 'int8'])
def test_batched_logits_match_alone_bit_for_bit(tiny, isa, mode):
    "One step of six sequences at different positions (int8 on AVX-512 takes them 4 + 2 per weight load): each row's logits equal, bit for bit, those of the batch-1 step."
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), mode)
    bd = BatchDecoder(m, decoder)
    ps = prompts([4, 9, 2, 6, 1, 3])
    seqs = [bd.new(20) for _ in ps]
    bd.forward(list(zip(seqs, ps)))
    got = bd.forward([(s, [7]) for s in seqs])
    for p, row in zip(ps, got):
        _, step = decoder.start(torch.tensor([p]), 20)
        assert torch.equal(step(torch.tensor([7]))[0], row), (isa, mode)

def test_without_the_step_each_sequence_goes_through_the_model(tiny):
    "No C++ step (a GPU, no compiler): the same interface, one sequence after another, the model's greedy tokens."
    bd = BatchDecoder(tiny)
    assert not bd.batched
    ps, joins, lengths = prompts([5, 3]), [0, 2], [8, 6]
    alone = [generate(tiny, torch.tensor([p]), n, temperature=0)[0, len(p):].tolist() for p, n in zip(ps, lengths)]
    assert batched_greedy(bd, ps, joins, lengths) == alone

@pytest.fixture(scope='module')
def served(tiny):
    from smollm2_nb.model.tokenizer import load_tokenizer
    m, decoder = prepare_for_inference(copy.deepcopy(tiny), 'fp32')
    return m, decoder, load_tokenizer()

def test_scheduler_streams_each_request_as_alone(served):
    m, decoder, tok = served
    sched = Scheduler(BatchDecoder(m, decoder), tok, max_batch=3, prefill_chunk=8)
    try:
        texts = ['ROMEO:', 'JULIET: O Romeo, Romeo, wherefore art thou', 'To be', 'KING', 'First Citizen:\nBefore we proceed']
        reqs = [sched.submit(Request(tok(t)['input_ids'], max_tokens=16, temperature=0)) for t in texts]
        got = [list(r.pieces(timeout=120)) for r in reqs]
        want = [''.join(stream(m, tok, t, 16, eos_token_id=None, temperature=0, decoder=decoder)) for t in texts]
        assert [''.join(g) for g in got] == want
        assert all(r.finish_reason == 'length' and len(r.tokens) == 16 for r in reqs)
        assert sched.stats['max_running'] == 3 and max(len(g) for g in got) > 1    # batched, and streamed in pieces
        # sampled with a seed: the same text twice, whoever else is running
        a = sched.submit(Request(tok('ROMEO:')['input_ids'], max_tokens=12, temperature=0.9, top_p=0.9, top_k=40, seed=3, repetition_penalty=1.2))
        b = sched.submit(Request(tok('ROMEO:')['input_ids'], max_tokens=12, temperature=0.9, top_p=0.9, top_k=40, seed=3, repetition_penalty=1.2))
        assert ''.join(a.pieces(60)) == ''.join(b.pieces(60))
    finally: sched.close()

def test_scheduler_stop_strings_eos_and_cancel(served):
    m, decoder, tok = served
    sched = Scheduler(BatchDecoder(m, decoder), tok, max_batch=2, max_queue=2)
    try:
        ids = tok('ROMEO:')['input_ids']
        full = ''.join(sched.submit(Request(ids, max_tokens=20, temperature=0)).pieces(60))
        stop = full[5:9]
        r = sched.submit(Request(ids, max_tokens=20, temperature=0, stop=[stop, 'zzzz-never']))
        pieces = list(r.pieces(60))
        assert ''.join(pieces) == full[:full.find(stop)] and r.finish_reason == 'stop'
        assert all(stop not in p for p in pieces)
        first = sched.submit(Request(ids, max_tokens=1, temperature=0)); list(first.pieces(60))
        r = sched.submit(Request(ids, max_tokens=20, temperature=0, eos=[first.tokens[0]]))
        assert ''.join(r.pieces(60)) == '' and r.finish_reason == 'stop' and r.tokens == []
        # a long request cancelled mid-way frees its slot: the queue drains and a new request is answered
        long = sched.submit(Request(ids, max_tokens=900, temperature=0))
        for _ in long.pieces(60): break
        long.cancel()
        assert ''.join(long.pieces(60)) is not None
        assert long.finish_reason == 'cancelled' and len(long.tokens) < 900
        # a full queue says so
        blockers = [sched.submit(Request(ids, max_tokens=900, temperature=0)) for _ in range(2)]
        for r in blockers: next(r.pieces(60))                 # both running: the queue is empty again
        waiting = [sched.submit(Request(ids, max_tokens=900, temperature=0)) for _ in range(2)]
        with pytest.raises(QueueFull): sched.submit(Request(ids, max_tokens=4, temperature=0))
        for r in blockers + waiting: r.cancel()
        with pytest.raises(ValueError, match='context'): sched.submit(Request(ids, max_tokens=10**6))
        assert ''.join(sched.submit(Request(ids, max_tokens=20, temperature=0)).pieces(60)) == full
        # waiting for the end alone gives the same text as the pieces, stop strings included
        assert sched.submit(Request(ids, max_tokens=20, temperature=0)).wait(60) == full
        assert sched.submit(Request(ids, max_tokens=20, temperature=0, stop=[stop])).wait(60) == full[:full.find(stop)]
        bad = Request(ids, max_tokens=4); bad._send(('error', 'decoding failed: boom'))
        with pytest.raises(RuntimeError, match='boom'): bad.wait(1)
        with pytest.raises(TimeoutError): Request(ids, max_tokens=4).wait(0.01)
    finally: sched.close()
    with pytest.raises(Closed): sched.submit(Request(ids, max_tokens=4))

def test_scheduler_loop_runs_on_its_own_thread_count(served):
    "The loop decodes on its own number of torch threads (default: as many as the process started with); the thread that made it keeps its own."
    from smollm2_nb.serve.batch import loop_threads, _per_thread_count
    if not _per_thread_count(): pytest.skip("torch's own thread pool: one count for the whole process")
    m, decoder, tok = served
    before, counts = torch.get_num_threads(), []
    bd = BatchDecoder(m, decoder)
    forward = bd.forward
    bd.forward = lambda *a, **kw: (counts.append(torch.get_num_threads()), forward(*a, **kw))[1]
    try:
        for threads in (1, None):
            sched = Scheduler(bd, tok, max_batch=2, threads=threads)
            try: text = ''.join(sched.stream(tok('ROMEO:')['input_ids'], max_tokens=4, temperature=0))
            finally: sched.close()
            assert text and set(counts) == {threads or loop_threads()}, (threads, counts)
            assert torch.get_num_threads() == before
            counts.clear()
    finally: torch.set_num_threads(before)   # the process-wide default the loop set, back for the tests after this one

def test_scheduler_text_is_the_tokenizers_decode(served):
    "The loop's text of a list of ids (straight through a fast tokenizer's backend) is `tokenizer.decode(ids, skip_special_tokens=True)`, special tokens and pieces of UTF-8 characters included."
    from smollm2_nb.serve.batch import _detokenizer
    _, _, tok = served
    ids = tok('Héllo wörld — 東京 🙂 <|im_start|>x')['input_ids'] + [0, 1, 2]
    text = _detokenizer(tok)
    for n in range(len(ids) + 1):
        assert text(ids[:n]) == tok.decode(ids[:n], skip_special_tokens=True)
        assert text(ids[n:]) == tok.decode(ids[n:], skip_special_tokens=True)

def test_lone_prompt_goes_in_one_step(served):
    "A prompt with nobody else decoding goes through in one step (up to `token_budget` tokens), not in `prefill_chunk` pieces; its greedy text is the same as in pieces."
    m, decoder, tok = served
    prompt = prompts([40])[0]
    texts = []
    for chunk, steps in ((8, 1 + 2), (64, 1 + 2)):   # the prompt's step, then one per new token after the first
        sched = Scheduler(BatchDecoder(m, decoder), tok, max_batch=2, prefill_chunk=chunk)
        try: texts.append(''.join(sched.stream(prompt, max_tokens=3, temperature=0)))
        finally: sched.close()
        assert sched.stats['steps'] == steps and sched.stats['rows'] == 40 + 2, sched.stats
    assert texts[0] == texts[1] == tok.decode(generate(m, torch.tensor([prompt]), 3, temperature=0, decoder=decoder)[0, 40:].tolist(), skip_special_tokens=True)
