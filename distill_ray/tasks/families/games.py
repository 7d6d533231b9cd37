"""Game families: Nim, tic-tac-toe, knight moves."""

from __future__ import annotations

import random
from functools import reduce

from distill_ray.tasks.families.core import family

KNIGHT = [(1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1)]


@family("nim", "games", "List[int]")
def nim(rng: random.Random, d: int) -> tuple[str, str]:
    # The answer is a winning move [pile, stones taken]: after it the piles' xor is 0.
    count, top = ((2, 9), (3, 20), (5, 60))[d - 1]
    if d == 1:   # two piles, answered as the piles after the move: shrink the larger one to the smaller
        a, b = sorted(rng.sample(range(1, top + 1), 2), reverse=True)
        return f"li == [li[0], {b}] and 0 <= li[0] < {a} and li[0] ^ {b} == 0", f"[{a} ^ {a} ^ {b}, {b}]"
    piles = [0]
    while reduce(lambda u, v: u ^ v, piles) == 0:   # a position with xor 0 has no winning move
        piles = [rng.randint(1, top) for _ in range(count)]
    after = " ^ ".join(f"({p} - li[1] * (li[0] == {i}))" for i, p in enumerate(piles))
    xor = " ^ ".join(str(p) for p in piles)
    return (f"len(li) == 2 and 0 <= li[0] < {count} and 0 < li[1] <= {piles}[li[0]] and {after} == 0",
            f"next([i, v - (v ^ ({xor}))] for i, v in enumerate({piles}) if v ^ ({xor}) < v)")


def _lines(n: int) -> list[list[int]]:
    rows = [[r * n + c for c in range(n)] for r in range(n)]
    cols = [[r * n + c for r in range(n)] for c in range(n)]
    return rows + cols + [[i * n + i for i in range(n)], [i * n + n - 1 - i for i in range(n)]]


def _wins(board: str, lines: list[list[int]]) -> list[int]:
    """Empty cells where X completes a line (the same rule sat states)."""
    return [i for i, v in enumerate(board) if v == "." and
            any(all(j == i or board[j] == "X" for j in line) for line in lines)]


@family("tictactoe", "games", "int")
def tictactoe(rng: random.Random, d: int) -> tuple[str, str]:
    # X to move on an n x n board (rows concatenated); exactly one cell wins at once, so x + 1 does not.
    # Difficulty 1 is one row of three with one gap; 2 and 3 a full board, every row, column and diagonal.
    if d == 1:
        row = rng.choice(("X.X", "XX.", ".XX"))
        return f"x >= 0 and '{row}'[:x] + 'X' + '{row}'[x + 1:] == 'XXX'", f"'{row}'.index('.')"
    n, extra = ((3, 4), (4, 6))[d - 2]
    lines = _lines(n)
    while True:
        line = rng.choice(lines)
        board = ["."] * (n * n)
        for j in line:
            board[j] = "X"
        board[rng.choice(line)] = "."
        for j in rng.sample([j for j in range(n * n) if j not in line], extra):
            board[j] = rng.choice("XO")
        text = "".join(board)
        if len(_wins(text, lines)) == 1:
            break
    wins = "'{b}'[{v}] == '.' and any(all(j == {v} or '{b}'[j] == 'X' for j in m) for m in {lines})"
    return (f"0 <= x < {n * n} and " + wins.format(b=text, v="x", lines=lines),
            f"next(i for i in range({n * n}) if {wins.format(b=text, v='i', lines=lines)})")


@family("knight_move", "games", "List[int]")
def knight_move(rng: random.Random, d: int) -> tuple[str, str]:
    # Squares [row, col] of a size x size board; a path of d knight moves from start to target.
    size = 8 if d < 3 else 10
    path = [(rng.randrange(size), rng.randrange(size))]
    while len(path) <= d:
        r, c = path[-1]
        path.append(rng.choice([(r + a, c + b) for a, b in KNIGHT if 0 <= r + a < size and 0 <= c + b < size]))
    (r0, c0), (rt, ct) = path[0], path[-1]
    inside = f"all(0 <= v < {size} for v in li)"
    if d == 1:   # one move on an unbounded board: a knight's jump is exactly a squared distance of 5
        return f"(li[0] - {r0}) ** 2 + (li[1] - {c0}) ** 2 == 5 and len(li) == 2", f"[{r0} + 1, {c0} + 2]"
    # li lists the intermediate squares; every consecutive pair of squares on the path is one knight move
    hops = d - 1
    squares = "[[" + f"{r0}, {c0}], " + ", ".join(f"li[{2 * i}:{2 * i + 2}]" for i in range(hops)) + f", [{rt}, {ct}]]"
    cond = (f"len(li) == {2 * hops} and {inside} and all(sorted([abs(p[0] - q[0]), abs(p[1] - q[1])]) == [1, 2] "
            f"for p, q in zip({squares}, {squares}[1:]))")
    grid = f"[[u, v] for u in range({size}) for v in range({size})]"
    knight = "sorted([abs({p}[0] - {q}[0]), abs({p}[1] - {q}[1])]) == [1, 2]"
    if hops == 1:
        return cond, (f"next(p for p in {grid} if " + knight.format(p="p", q=f"[{r0}, {c0}]") + " and "
                      + knight.format(p="p", q=f"[{rt}, {ct}]") + ")")
    return cond, (f"next(p + q for p in {grid} for q in {grid} if " + knight.format(p="p", q=f"[{r0}, {c0}]")
                  + " and " + knight.format(p="p", q="q") + " and " + knight.format(p="q", q=f"[{rt}, {ct}]") + ")")
