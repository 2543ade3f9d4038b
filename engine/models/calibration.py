"""The text int8 quantization calibrates on: a few hundred tokens of varied kinds (prose, chat,
code, JSON, numbers, lists), so each linear layer sees the activation ranges real prompts give it.
Written for this project; the quality benchmark (bench/quant.py) scores other text."""

CALIBRATION_TEXT = """\
<|im_start|>system
You are a helpful assistant. Answer briefly and accurately.<|im_end|>
<|im_start|>user
What causes the seasons on Earth, and why is it warmer in summer?<|im_end|>
<|im_start|>assistant
The seasons come from the tilt of Earth's axis, about 23.4 degrees. In summer your hemisphere leans
toward the Sun, so sunlight arrives more directly and days are longer; in winter it leans away.

The old mill stood at the edge of the village, where the river bent twice before it reached the
sea. Every morning the miller's daughter walked the path along the water, counting herons, and
every evening she wrote down what she had seen in a small green notebook.

def merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    \"\"\"Merge overlapping closed intervals, returned sorted by start.\"\"\"
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged

{"id": 4172, "name": "Ana Souza", "email": "ana.souza@example.com", "active": true,
 "roles": ["editor", "reviewer"], "balance": -31.75, "address": {"city": "Porto", "zip": "4000-123"}}

SELECT customer_id, COUNT(*) AS orders, SUM(total) AS revenue
FROM orders WHERE created_at >= '2024-01-01' GROUP BY customer_id ORDER BY revenue DESC LIMIT 10;

Shopping list: 2 kg flour, 12 eggs, 1 L milk, butter (250 g), 3 lemons, sea salt.
Results: 3.14159, 2.71828, 1.41421; 17% up from 2023; 1,250,000 users in 48 countries.

Q: If a train leaves at 09:40 and the trip takes 2 h 35 min, when does it arrive?
A: It arrives at 12:15.

<|im_start|>user
Translate "good morning, how are you?" into French and Spanish.<|im_end|>
<|im_start|>assistant
French: "Bonjour, comment allez-vous ?" Spanish: "Buenos días, ¿cómo estás?"<|im_end|>
"""
