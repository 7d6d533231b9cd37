"""Sentence embeddings distilled from a teacher (DisCo, contrastive KD; ``distill-ray disco``): the losses
(``losses``), the puzzle similarity data (``data``), the two training phases (``train``) and the measured
comparison (``run``). See README, 'Sentence-embedding students (DisCo)'."""
