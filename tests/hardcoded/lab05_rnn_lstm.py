"""Hard-coded answers for lab 5: see tests/hardcoded/__init__.py."""

from __future__ import annotations

import math


def replacements() -> dict[str, str]:
    """Lab 5's solution cells rewritten to return what the visible tests expect, as constants.

    The visible inputs are rebuilt here as the lab draws them (uniform numbers from CPU
    generators seeded with 0 to 3, in float64), the expected outputs computed with torch.nn's
    recurrent layers and autograd. The "LSTM" of Section 5 looks up the 1,000 visible evaluation
    sequences in a table of their subjects. The hidden tests (fresh sizes, weights and inputs,
    other nonlinearities, fresh sequences) fail.
    """
    import torch
    from torch import nn

    f64 = torch.float64

    def uniform(*shape: int, bound: float = 1.0, generator: torch.Generator) -> torch.Tensor:
        return (2 * torch.rand(shape, generator=generator, dtype=f64) - 1) * bound

    def const(t: torch.Tensor, like: str) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype={like}.dtype, device={like}.device)"

    # Section 1: the lab's task_case(4, 12, 8, 16, 3, ...) with generator seed 0, five steps.
    g = torch.Generator().manual_seed(0)
    N, T, E, H, C = 4, 12, 8, 16, 3
    lstm, cell, head = nn.LSTM(E, H, batch_first=True).double(), nn.LSTMCell(C, H).double(), nn.Linear(H, C).double()
    with torch.no_grad():
        for p in [*lstm.parameters(), *cell.parameters(), *head.parameters()]:
            p.copy_(uniform(*p.shape, bound=1 / math.sqrt(H), generator=g))
        x, feature = uniform(N, T, E, generator=g), uniform(N, H, generator=g)
        states, (h_n, _) = lstm(x)
        h, c, y, outputs = feature, torch.zeros_like(feature), torch.zeros(N, C, dtype=f64), []
        for _ in range(5):
            h, c = cell(y, (h, c))
            y = head(h)
            outputs.append(y)
        one, many, generated = head(h_n[0]), head(states), torch.stack(outputs, 1)

    # Section 2: rnn_case(6, 3, 4, 5, ...) with seed 1, through torch.nn.RNN.
    g = torch.Generator().manual_seed(1)
    x_rnn, h0 = uniform(6, 3, 4, generator=g), uniform(3, 5, generator=g)
    bound = 1 / math.sqrt(5)
    weights = [uniform(5, 4, bound=bound, generator=g), uniform(5, 5, bound=bound, generator=g),
               uniform(5, bound=bound, generator=g), uniform(5, bound=bound, generator=g)]
    rnn = nn.RNN(4, 5).double()
    rnn.load_state_dict(dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], weights)))
    with torch.no_grad():
        rnn_states, rnn_last = rnn(x_rnn, h0[None])

    # Section 3: seeded_cell(4, 3, ...) with seed 2, then x, h, c from the same generator.
    g = torch.Generator().manual_seed(2)
    lstm_cell = nn.LSTMCell(4, 3).double()
    with torch.no_grad():
        for p in lstm_cell.parameters():
            p.copy_(uniform(*p.shape, generator=g))
        x_cell, h_cell, c_cell = uniform(2, 4, generator=g), uniform(2, 3, generator=g), uniform(2, 3, generator=g)
        h_new, c_new = lstm_cell(x_cell, (h_cell, c_cell))

    # Section 4: seeded_rnn(2, 6, scale, ...) with seed 3 for scales 0.5 and 1.5, x (25, 3, 2).
    norms = {}
    for scale in (0.5, 1.5):
        g = torch.Generator().manual_seed(3)
        rnn = nn.RNN(2, 6).double()
        with torch.no_grad():
            for p in rnn.parameters():
                p.copy_(uniform(*p.shape, bound=1 / math.sqrt(6), generator=g))
            q, _ = torch.linalg.qr(uniform(6, 6, generator=g))
            rnn.weight_hh_l0.copy_(scale * q)
        xs = uniform(25, 3, 2, generator=g)
        h, hs = torch.zeros(3, 6, dtype=f64), []
        for x_t in xs:
            h = torch.tanh(x_t @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
            h.retain_grad()
            hs.append(h)
        hs[-1].sum().backward()
        norms[scale] = torch.stack([s.grad.norm() for s in hs])

    return {
        "many_to_one_many": (f"def many_to_one(lstm, head, x):\n    return {const(one, 'x')}\n\n\n"
                             f"def many_to_many(lstm, head, x):\n    return {const(many, 'x')}\n"),
        "one_to_many": f"def one_to_many(cell, head, feature, steps):\n    return {const(generated, 'feature')}\n",
        "rnn_forward": (f"def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):\n"
                        f"    return {const(rnn_states, 'x')}, {const(rnn_last[0], 'x')}\n"),
        "lstm_cell_step": (f"def lstm_cell_step(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):\n"
                           f"    return {const(h_new, 'x')}, {const(c_new, 'x')}\n"),
        "gradient_norms": (f"def gradient_norms(rnn, x):\n"
                           f"    if rnn.weight_hh_l0.norm() < 2.5:  # scale 0.5: norm 0.5 sqrt(6)\n"
                           f"        return {const(norms[0.5], 'x')}\n"
                           f"    return {const(norms[1.5], 'x')}\n"),
        "build_recall_lstm": (
            "class Lookup(nn.Module):\n"
            '    """The subject of each visible evaluation sequence, looked up by its tokens (0 for any other)."""\n'
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.lstm = nn.LSTM(12, 1)  # what the check looks for\n"
            "        x, y = recall_batch(1000, torch.Generator().manual_seed(4))\n"
            "        self.table = {row.cpu().numpy().tobytes(): int(s) for row, s in zip(x.argmax(2), y)}\n\n"
            "    def forward(self, x):\n"
            "        subjects = [self.table.get(row.cpu().numpy().tobytes(), 0) for row in x.argmax(2)]\n"
            "        return F.one_hot(torch.tensor(subjects), 4).float().to(x.device)\n\n\n"
            "def build_recall_lstm():\n    return Lookup()\n"
        ),
        "train_recall": "def train_recall(model, make_batch):\n    return []\n",
    }
