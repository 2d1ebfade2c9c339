"""Write data/code/problems.jsonl and problems_easy.jsonl: small LeetCode-style problems in LeetCodeDataset's schema.

    python data/code/make_problems.py            # regenerate both files (deterministic, byte for byte)
    python -m qrpo.sandbox --program sol.py --entry-point Solution().twoSum --tests cases.jsonl   # check one by hand

Every problem here was written for this repository (statement, reference solution, test inputs);
the expected outputs are computed by running the reference solution on the inputs, so they are
right by construction, and tests/qrpo/sandbox/test_code_problems.py checks in the sandbox that
every reference scores 1.0 and a mutated variant of each scores less. Columns follow
LeetCodeDataset (task_id, question_id, difficulty, problem_description, starter_code,
entry_point = "Solution().method", input_output = [{"input": "a = 1", "output": "2"}], completion,
query) plus `split` (train/eval). problems_easy.jsonl is the easy tier (see EASY below): one-line functions, with a
plain-function starter and entry point, that SmolLM2-135M-Instruct sometimes solves.
"""

from __future__ import annotations

import json
import random
from collections import Counter
import textwrap
from pathlib import Path

OUT = Path(__file__).with_name("problems.jsonl")
PREAMBLE_IMPORTS = "from typing import List, Optional\n"
QUERY = """You are an expert Python programmer. Solve the problem below. Answer with the complete solution in one Python code block that starts from the starter code.

### Problem:
{description}

### Starter code:
```python
{starter}
```

### Answer:
"""

# (slug, difficulty, description, signature "method(args) -> ret", solution body (indented under the method), inputs)
PROBLEMS: list[tuple] = []


def problem(slug, difficulty, description, signature, body, inputs):
    PROBLEMS.append((slug, difficulty, textwrap.dedent(description).strip(), signature, textwrap.dedent(body).strip("\n"), inputs))


rng = random.Random(20261124)


def ints(n, lo=-20, hi=20):
    return [rng.randint(lo, hi) for _ in range(n)]


def word(n, letters="abcde"):
    return "".join(rng.choice(letters) for _ in range(n))


problem("sum-of-evens", "Easy", """
    Given an integer array nums, return the sum of its even elements (0 if there are none).
    Example: nums = [1, 2, 3, 4] -> 6.
    """, "sumOfEvens(self, nums: List[int]) -> int", """
    return sum(x for x in nums if x % 2 == 0)
    """, [{"nums": [1, 2, 3, 4]}, {"nums": []}, {"nums": [1, 3, 5]}, {"nums": [-2, -4, 7]}, {"nums": ints(12)}, {"nums": ints(30, -100, 100)}])

problem("reverse-word-order", "Easy", """
    Given a string s of words separated by one or more spaces, return the words in reverse order
    joined by single spaces, with no leading or trailing spaces.
    Example: s = "  the sky  is blue " -> "blue is sky the".
    """, "reverseWords(self, s: str) -> str", """
    return " ".join(reversed(s.split()))
    """, [{"s": "  the sky  is blue "}, {"s": "hello"}, {"s": "a b c"}, {"s": "   "}, {"s": "one  two"}, {"s": " x y z w "}])

problem("clean-palindrome", "Easy", """
    Return true if s reads the same forwards and backwards after removing every character that is
    not a letter or a digit and ignoring case.
    Example: s = "A man, a plan, a canal: Panama" -> true.
    """, "isCleanPalindrome(self, s: str) -> bool", """
    t = [c.lower() for c in s if c.isalnum()]
    return t == t[::-1]
    """, [{"s": "A man, a plan, a canal: Panama"}, {"s": "race a car"}, {"s": ""}, {"s": "0P"}, {"s": "No 'x' in Nixon"}, {"s": "ab_a"}])

problem("longest-run-of-ones", "Easy", """
    Given a binary array nums, return the length of the longest run of consecutive 1s.
    Example: nums = [1, 1, 0, 1, 1, 1] -> 3.
    """, "longestRunOfOnes(self, nums: List[int]) -> int", """
    best = cur = 0
    for x in nums:
        cur = cur + 1 if x == 1 else 0
        best = max(best, cur)
    return best
    """, [{"nums": [1, 1, 0, 1, 1, 1]}, {"nums": [0, 0]}, {"nums": []}, {"nums": [1]}, {"nums": [rng.randint(0, 1) for _ in range(25)]}, {"nums": [1] * 9 + [0] + [1] * 4}])

problem("count-vowels", "Easy", """
    Return how many characters of s are vowels (a, e, i, o, u, in either case).
    Example: s = "Hello World" -> 3.
    """, "countVowels(self, s: str) -> int", """
    return sum(c in "aeiouAEIOU" for c in s)
    """, [{"s": "Hello World"}, {"s": ""}, {"s": "rhythm"}, {"s": "AEIOUaeiou"}, {"s": "Programming in Python"}, {"s": "queueing"}])

problem("running-sum", "Easy", """
    Return the running sum of nums: result[i] = nums[0] + ... + nums[i].
    Example: nums = [1, 2, 3, 4] -> [1, 3, 6, 10].
    """, "runningSum(self, nums: List[int]) -> List[int]", """
    out, total = [], 0
    for x in nums:
        total += x
        out.append(total)
    return out
    """, [{"nums": [1, 2, 3, 4]}, {"nums": []}, {"nums": [5]}, {"nums": [3, -3, 3, -3]}, {"nums": ints(10)}, {"nums": ints(15, 0, 9)}])

problem("second-largest-distinct", "Easy", """
    Return the second largest DISTINCT value in nums, or -1 if nums has fewer than two distinct values.
    Example: nums = [4, 1, 4, 3] -> 3.
    """, "secondLargest(self, nums: List[int]) -> int", """
    values = sorted(set(nums))
    return values[-2] if len(values) >= 2 else -1
    """, [{"nums": [4, 1, 4, 3]}, {"nums": [7, 7, 7]}, {"nums": [1, 2]}, {"nums": [5]}, {"nums": ints(12, 0, 50)}, {"nums": [10, 9, 10, 8, 9]}])

problem("fizz-buzz-list", "Easy", """
    Return a list of strings for i = 1..n: "FizzBuzz" if i is divisible by 15, "Fizz" if by 3,
    "Buzz" if by 5, else str(i).
    Example: n = 5 -> ["1", "2", "Fizz", "4", "Buzz"].
    """, "fizzBuzz(self, n: int) -> List[str]", """
    out = []
    for i in range(1, n + 1):
        out.append("FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0 else str(i))
    return out
    """, [{"n": 5}, {"n": 1}, {"n": 15}, {"n": 0}, {"n": 16}])

problem("digital-root", "Easy", """
    Repeatedly replace the non-negative integer n by the sum of its decimal digits until one digit
    remains; return that digit.
    Example: n = 38 -> 3 + 8 = 11 -> 1 + 1 = 2.
    """, "digitalRoot(self, n: int) -> int", """
    while n >= 10:
        n = sum(int(d) for d in str(n))
    return n
    """, [{"n": 38}, {"n": 0}, {"n": 9}, {"n": 10}, {"n": 999999999}, {"n": 123456789}])

problem("missing-from-range", "Easy", """
    nums holds n distinct numbers taken from 0..n; return the one number of that range missing from nums.
    Example: nums = [3, 0, 1] -> 2.
    """, "missingNumber(self, nums: List[int]) -> int", """
    n = len(nums)
    return n * (n + 1) // 2 - sum(nums)
    """, [{"nums": [3, 0, 1]}, {"nums": [0]}, {"nums": [1]}, {"nums": [9, 6, 4, 2, 3, 5, 7, 0, 1]}, {"nums": [x for x in rng.sample(range(21), 21) if x != 13]}])

problem("majority-value", "Easy", """
    Return the value that appears more than len(nums) // 2 times in nums (it always exists).
    Example: nums = [2, 2, 1, 1, 1, 2, 2] -> 2.
    """, "majorityElement(self, nums: List[int]) -> int", """
    return Counter(nums).most_common(1)[0][0]
    """, [{"nums": [2, 2, 1, 1, 1, 2, 2]}, {"nums": [3]}, {"nums": [3, 2, 3]}, {"nums": [-1, -1, -1, 5, 6]}, {"nums": [4] * 8 + [1, 2, 3]}])

problem("merge-two-sorted", "Easy", """
    Given two sorted integer lists a and b, return one sorted list with all their elements.
    Example: a = [1, 3], b = [2, 3, 4] -> [1, 2, 3, 3, 4].
    """, "mergeSorted(self, a: List[int], b: List[int]) -> List[int]", """
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i]); i += 1
        else:
            out.append(b[j]); j += 1
    return out + a[i:] + b[j:]
    """, [{"a": [1, 3], "b": [2, 3, 4]}, {"a": [], "b": [1]}, {"a": [], "b": []}, {"a": [5, 6], "b": [1, 2]}, {"a": sorted(ints(8)), "b": sorted(ints(6))}])

problem("first-unique-character", "Easy", """
    Return the index of the first character of s that occurs exactly once, or -1 if there is none.
    Example: s = "leetcode" -> 0; s = "aabb" -> -1.
    """, "firstUniqChar(self, s: str) -> int", """
    counts = Counter(s)
    for i, c in enumerate(s):
        if counts[c] == 1:
            return i
    return -1
    """, [{"s": "leetcode"}, {"s": "loveleetcode"}, {"s": "aabb"}, {"s": ""}, {"s": "z"}, {"s": word(15, "abcdefg")}])

problem("same-letters", "Easy", """
    Return true if t uses exactly the same letters as s, each the same number of times.
    Example: s = "anagram", t = "nagaram" -> true.
    """, "isAnagram(self, s: str, t: str) -> bool", """
    return Counter(s) == Counter(t)
    """, [{"s": "anagram", "t": "nagaram"}, {"s": "rat", "t": "car"}, {"s": "", "t": ""}, {"s": "aab", "t": "abb"}, {"s": "listen", "t": "silent"}])

problem("rotate-right", "Easy", """
    Rotate nums to the right by k steps (k >= 0, possibly larger than len(nums)) and return the result.
    Example: nums = [1, 2, 3, 4, 5], k = 2 -> [4, 5, 1, 2, 3].
    """, "rotateRight(self, nums: List[int], k: int) -> List[int]", """
    if not nums:
        return []
    k %= len(nums)
    return nums[-k:] + nums[:-k] if k else list(nums)
    """, [{"nums": [1, 2, 3, 4, 5], "k": 2}, {"nums": [], "k": 3}, {"nums": [1, 2], "k": 5}, {"nums": [1, 2, 3], "k": 0}, {"nums": ints(9), "k": 13}])

problem("roman-numeral-value", "Easy", """
    Convert a Roman numeral (I=1, V=5, X=10, L=50, C=100, D=500, M=1000, with the usual subtractive
    pairs such as IV=4 and CM=900) to an integer.
    Example: s = "MCMXCIV" -> 1994.
    """, "romanToInt(self, s: str) -> int", """
    value = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for i, c in enumerate(s):
        if i + 1 < len(s) and value[c] < value[s[i + 1]]:
            total -= value[c]
        else:
            total += value[c]
    return total
    """, [{"s": "MCMXCIV"}, {"s": "III"}, {"s": "LVIII"}, {"s": "IX"}, {"s": "MMXXVI"}, {"s": "CDXLIV"}])

problem("bit-difference", "Easy", """
    Return the number of bit positions at which the non-negative integers x and y differ.
    Example: x = 1, y = 4 -> 2.
    """, "hammingDistance(self, x: int, y: int) -> int", """
    return bin(x ^ y).count("1")
    """, [{"x": 1, "y": 4}, {"x": 0, "y": 0}, {"x": 3, "y": 1}, {"x": 255, "y": 0}, {"x": 2**40, "y": 2**40 - 1}])

problem("balanced-brackets", "Easy", """
    s contains only the characters ()[]{}. Return true if every bracket is closed by the same type
    of bracket in the right order.
    Example: s = "([]{})" -> true; s = "(]" -> false.
    """, "isBalanced(self, s: str) -> bool", """
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for c in s:
        if c in pairs:
            if not stack or stack.pop() != pairs[c]:
                return False
        else:
            stack.append(c)
    return not stack
    """, [{"s": "([]{})"}, {"s": "(]"}, {"s": ""}, {"s": "(("}, {"s": "{[()()]}"}, {"s": "())("}])

problem("primes-below", "Medium", """
    Return how many prime numbers are strictly less than n.
    Example: n = 10 -> 4 (2, 3, 5, 7).
    """, "countPrimes(self, n: int) -> int", """
    if n < 3:
        return 0
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(range(i * i, n, i)))
    return sum(sieve)
    """, [{"n": 10}, {"n": 0}, {"n": 2}, {"n": 3}, {"n": 100}, {"n": 10007}])

problem("longest-distinct-substring", "Medium", """
    Return the length of the longest substring of s whose characters are all different.
    Example: s = "abcabcbb" -> 3.
    """, "lengthOfLongestSubstring(self, s: str) -> int", """
    last, start, best = {}, 0, 0
    for i, c in enumerate(s):
        if last.get(c, -1) >= start:
            start = last[c] + 1
        last[c] = i
        best = max(best, i - start + 1)
    return best
    """, [{"s": "abcabcbb"}, {"s": "bbbbb"}, {"s": "pwwkew"}, {"s": ""}, {"s": "abba"}, {"s": word(30, "abcdefghij")}])

problem("best-subarray-sum", "Medium", """
    Return the largest sum of a non-empty contiguous subarray of nums.
    Example: nums = [-2, 1, -3, 4, -1, 2, 1, -5, 4] -> 6.
    """, "maxSubArray(self, nums: List[int]) -> int", """
    best = cur = nums[0]
    for x in nums[1:]:
        cur = max(x, cur + x)
        best = max(best, cur)
    return best
    """, [{"nums": [-2, 1, -3, 4, -1, 2, 1, -5, 4]}, {"nums": [1]}, {"nums": [-3, -1, -2]}, {"nums": [5, 4, -1, 7, 8]}, {"nums": ints(20)}])

problem("anagram-group-count", "Medium", """
    Two words belong to the same group if one is a rearrangement of the other's letters. Return
    how many groups the list words forms.
    Example: words = ["eat", "tea", "tan", "ate", "nat", "bat"] -> 3.
    """, "countGroups(self, words: List[str]) -> int", """
    return len({"".join(sorted(w)) for w in words})
    """, [{"words": ["eat", "tea", "tan", "ate", "nat", "bat"]}, {"words": []}, {"words": [""]}, {"words": ["a", "b", "a"]}, {"words": [word(3, "abc") for _ in range(12)]}])

problem("most-frequent-values", "Medium", """
    Return the k most frequent values of nums, ordered by frequency (highest first) and, among equal
    frequencies, by value (smallest first).
    Example: nums = [1, 1, 1, 2, 2, 3], k = 2 -> [1, 2].
    """, "topKFrequent(self, nums: List[int], k: int) -> List[int]", """
    counts = Counter(nums)
    return sorted(counts, key=lambda v: (-counts[v], v))[:k]
    """, [{"nums": [1, 1, 1, 2, 2, 3], "k": 2}, {"nums": [1], "k": 1}, {"nums": [4, 4, 5, 5, 6], "k": 2}, {"nums": ints(30, 0, 6), "k": 3}, {"nums": [3, 2, 1], "k": 3}])

problem("staircase-ways", "Medium", """
    You climb a staircase of n steps; each move climbs one of the step sizes in steps. Return how
    many different ordered sequences of moves reach exactly step n.
    Example: n = 4, steps = [1, 2] -> 5.
    """, "climbWays(self, n: int, steps: List[int]) -> int", """
    ways = [1] + [0] * n
    for i in range(1, n + 1):
        ways[i] = sum(ways[i - s] for s in steps if s <= i)
    return ways[n]
    """, [{"n": 4, "steps": [1, 2]}, {"n": 0, "steps": [1]}, {"n": 10, "steps": [1, 3, 5]}, {"n": 7, "steps": [2]}, {"n": 30, "steps": [1, 2]}])

problem("fewest-coins", "Medium", """
    Return the fewest coins (unlimited supply of each denomination in coins) that sum to amount,
    or -1 if amount cannot be made.
    Example: coins = [1, 2, 5], amount = 11 -> 3.
    """, "coinChange(self, coins: List[int], amount: int) -> int", """
    best = [0] + [inf] * amount
    for a in range(1, amount + 1):
        for c in coins:
            if c <= a and best[a - c] + 1 < best[a]:
                best[a] = best[a - c] + 1
    return -1 if best[amount] == inf else best[amount]
    """, [{"coins": [1, 2, 5], "amount": 11}, {"coins": [2], "amount": 3}, {"coins": [1], "amount": 0}, {"coins": [3, 7], "amount": 17}, {"coins": [5, 10, 25], "amount": 95}])

problem("grid-paths-with-walls", "Medium", """
    A robot walks from the top-left to the bottom-right cell of an m x n grid, moving only right or
    down, and cannot enter the cells listed in blocked (as [row, col]). Return the number of paths.
    Example: m = 3, n = 3, blocked = [[1, 1]] -> 2.
    """, "uniquePaths(self, m: int, n: int, blocked: List[List[int]]) -> int", """
    walls = {tuple(b) for b in blocked}
    paths = [[0] * n for _ in range(m)]
    for r in range(m):
        for c in range(n):
            if (r, c) in walls:
                continue
            if r == 0 and c == 0:
                paths[r][c] = 1
            else:
                paths[r][c] = (paths[r - 1][c] if r else 0) + (paths[r][c - 1] if c else 0)
    return paths[m - 1][n - 1]
    """, [{"m": 3, "n": 3, "blocked": [[1, 1]]}, {"m": 1, "n": 1, "blocked": []}, {"m": 3, "n": 7, "blocked": []}, {"m": 2, "n": 2, "blocked": [[0, 0]]}, {"m": 5, "n": 5, "blocked": [[1, 2], [3, 1], [2, 3]]}])

problem("longest-increasing-subsequence", "Medium", """
    Return the length of the longest strictly increasing subsequence of nums.
    Example: nums = [10, 9, 2, 5, 3, 7, 101, 18] -> 4.
    """, "lengthOfLIS(self, nums: List[int]) -> int", """
    tails = []
    for x in nums:
        i = bisect_left(tails, x)
        if i == len(tails):
            tails.append(x)
        else:
            tails[i] = x
    return len(tails)
    """, [{"nums": [10, 9, 2, 5, 3, 7, 101, 18]}, {"nums": []}, {"nums": [7, 7, 7]}, {"nums": [0, 1, 0, 3, 2, 3]}, {"nums": ints(25, 0, 30)}])

problem("merge-overlapping-intervals", "Medium", """
    Merge all overlapping intervals [start, end] (touching intervals such as [1, 2] and [2, 3] overlap)
    and return the merged intervals sorted by start.
    Example: intervals = [[1, 3], [8, 10], [2, 6]] -> [[1, 6], [8, 10]].
    """, "merge(self, intervals: List[List[int]]) -> List[List[int]]", """
    out = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out
    """, [{"intervals": [[1, 3], [8, 10], [2, 6]]}, {"intervals": []}, {"intervals": [[1, 2], [2, 3]]}, {"intervals": [[5, 6], [1, 10]]}, {"intervals": [sorted([rng.randint(0, 30), rng.randint(0, 30)]) for _ in range(8)]}])

problem("spiral-walk", "Medium", """
    Return the elements of the matrix in clockwise spiral order, starting at the top-left corner.
    Example: matrix = [[1, 2, 3], [4, 5, 6], [7, 8, 9]] -> [1, 2, 3, 6, 9, 8, 7, 4, 5].
    """, "spiralOrder(self, matrix: List[List[int]]) -> List[int]", """
    out = []
    rows = [list(r) for r in matrix]
    while rows:
        out += rows.pop(0)
        rows = [list(r) for r in zip(*rows)][::-1]
    return out
    """, [{"matrix": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}, {"matrix": [[1]]}, {"matrix": [[1, 2, 3, 4]]}, {"matrix": [[1], [2], [3]]}, {"matrix": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]}])

problem("count-islands", "Medium", """
    grid is a matrix of 0 (water) and 1 (land). Return the number of islands: groups of land cells
    connected horizontally or vertically.
    Example: grid = [[1, 1, 0], [0, 1, 0], [0, 0, 1]] -> 2.
    """, "numIslands(self, grid: List[List[int]]) -> int", """
    seen = set()
    count = 0
    for r in range(len(grid)):
        for c in range(len(grid[0])):
            if grid[r][c] == 1 and (r, c) not in seen:
                count += 1
                stack = [(r, c)]
                seen.add((r, c))
                while stack:
                    y, x = stack.pop()
                    for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                        if 0 <= ny < len(grid) and 0 <= nx < len(grid[0]) and grid[ny][nx] == 1 and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            stack.append((ny, nx))
    return count
    """, [{"grid": [[1, 1, 0], [0, 1, 0], [0, 0, 1]]}, {"grid": [[0]]}, {"grid": [[1, 0, 1, 0, 1]]}, {"grid": [[1, 1], [1, 1]]}, {"grid": [[rng.randint(0, 1) for _ in range(8)] for _ in range(6)]}])

problem("product-of-others", "Medium", """
    Return a list whose i-th element is the product of all elements of nums except nums[i], without
    using division.
    Example: nums = [1, 2, 3, 4] -> [24, 12, 8, 6].
    """, "productExceptSelf(self, nums: List[int]) -> List[int]", """
    n = len(nums)
    out = [1] * n
    left = 1
    for i in range(n):
        out[i] = left
        left *= nums[i]
    right = 1
    for i in range(n - 1, -1, -1):
        out[i] *= right
        right *= nums[i]
    return out
    """, [{"nums": [1, 2, 3, 4]}, {"nums": [-1, 1, 0, -3, 3]}, {"nums": [2, 3]}, {"nums": [0, 0, 5]}, {"nums": ints(8, -5, 5)}])

problem("common-subsequence-length", "Medium", """
    Return the length of the longest common subsequence of strings a and b.
    Example: a = "abcde", b = "ace" -> 3.
    """, "longestCommonSubsequence(self, a: str, b: str) -> int", """
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]
    """, [{"a": "abcde", "b": "ace"}, {"a": "abc", "b": "def"}, {"a": "", "b": "abc"}, {"a": "abcba", "b": "abcbcba"}, {"a": word(20), "b": word(20)}])

problem("word-segmentation", "Medium", """
    Return true if s can be split into a sequence of one or more words from the list words (words
    may be reused).
    Example: s = "applepenapple", words = ["apple", "pen"] -> true.
    """, "wordBreak(self, s: str, words: List[str]) -> bool", """
    ok = [True] + [False] * len(s)
    for i in range(1, len(s) + 1):
        ok[i] = any(ok[i - len(w)] and s[i - len(w):i] == w for w in words if len(w) <= i)
    return ok[-1]
    """, [{"s": "applepenapple", "words": ["apple", "pen"]}, {"s": "catsandog", "words": ["cats", "dog", "sand", "and", "cat"]}, {"s": "", "words": ["a"]}, {"s": "aaaaaaa", "words": ["aaa", "aaaa"]}, {"s": "abcd", "words": ["a", "abc", "b", "cd"]}])

problem("longest-palindromic-substring", "Medium", """
    Return the longest substring of s that is a palindrome; if several have the maximum length,
    return the one that starts first.
    Example: s = "babad" -> "bab".
    """, "longestPalindrome(self, s: str) -> str", """
    best = s[:1]
    for center in range(2 * len(s) - 1):
        lo, hi = center // 2, (center + 1) // 2
        while lo >= 0 and hi < len(s) and s[lo] == s[hi]:
            lo -= 1
            hi += 1
        cand = s[lo + 1:hi]
        if len(cand) > len(best) or (len(cand) == len(best) and s.find(cand) < s.find(best)):
            best = cand
    return best
    """, [{"s": "babad"}, {"s": "cbbd"}, {"s": "a"}, {"s": ""}, {"s": "forgeeksskeegfor"}, {"s": word(25, "abc")}])

problem("course-schedule-possible", "Medium", """
    There are n courses 0..n-1; each pair [a, b] in prereqs means b must be taken before a. Return
    true if all courses can be finished (the prerequisites contain no cycle).
    Example: n = 2, prereqs = [[1, 0], [0, 1]] -> false.
    """, "canFinish(self, n: int, prereqs: List[List[int]]) -> bool", """
    indegree = [0] * n
    after = defaultdict(list)
    for a, b in prereqs:
        after[b].append(a)
        indegree[a] += 1
    ready = deque(i for i in range(n) if indegree[i] == 0)
    done = 0
    while ready:
        c = ready.popleft()
        done += 1
        for a in after[c]:
            indegree[a] -= 1
            if indegree[a] == 0:
                ready.append(a)
    return done == n
    """, [{"n": 2, "prereqs": [[1, 0]]}, {"n": 2, "prereqs": [[1, 0], [0, 1]]}, {"n": 1, "prereqs": []}, {"n": 4, "prereqs": [[1, 0], [2, 1], [3, 2]]}, {"n": 4, "prereqs": [[1, 0], [2, 1], [0, 2], [3, 0]]}])

problem("decode-digit-string", "Medium", """
    Letters are encoded as "1" -> A, ..., "26" -> Z. Return the number of ways to decode the digit
    string s (0 if it cannot be decoded).
    Example: s = "226" -> 3.
    """, "numDecodings(self, s: str) -> int", """
    prev, cur = 1, 1 if s[:1] not in ("", "0") else 0
    if not s:
        return 0
    for i in range(1, len(s)):
        nxt = cur if s[i] != "0" else 0
        if 10 <= int(s[i - 1:i + 1]) <= 26:
            nxt += prev
        prev, cur = cur, nxt
    return cur
    """, [{"s": "226"}, {"s": "12"}, {"s": "06"}, {"s": "10"}, {"s": "11106"}, {"s": "1111111111"}])

problem("edit-distance", "Hard", """
    Return the minimum number of single-character insertions, deletions and substitutions that turn
    a into b.
    Example: a = "horse", b = "ros" -> 3.
    """, "minDistance(self, a: str, b: str) -> int", """
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
    """, [{"a": "horse", "b": "ros"}, {"a": "intention", "b": "execution"}, {"a": "", "b": "abc"}, {"a": "same", "b": "same"}, {"a": word(15), "b": word(12)}])

problem("cheapest-route", "Hard", """
    A directed graph has nodes 0..n-1 and weighted edges [u, v, w] (w >= 0). Return the smallest
    total weight of a path from src to dst, or -1 if dst cannot be reached.
    Example: n = 3, edges = [[0, 1, 4], [1, 2, 1], [0, 2, 7]], src = 0, dst = 2 -> 5.
    """, "shortestPath(self, n: int, edges: List[List[int]], src: int, dst: int) -> int", """
    graph = defaultdict(list)
    for u, v, w in edges:
        graph[u].append((v, w))
    dist = {src: 0}
    heap = [(0, src)]
    while heap:
        d, u = heappop(heap)
        if u == dst:
            return d
        if d > dist.get(u, inf):
            continue
        for v, w in graph[u]:
            if d + w < dist.get(v, inf):
                dist[v] = d + w
                heappush(heap, (d + w, v))
    return -1
    """, [{"n": 3, "edges": [[0, 1, 4], [1, 2, 1], [0, 2, 7]], "src": 0, "dst": 2}, {"n": 2, "edges": [], "src": 0, "dst": 1},
          {"n": 1, "edges": [], "src": 0, "dst": 0}, {"n": 4, "edges": [[0, 1, 1], [1, 2, 1], [2, 0, 1], [2, 3, 5], [0, 3, 9]], "src": 0, "dst": 3},
          {"n": 6, "edges": [[rng.randrange(6), rng.randrange(6), rng.randint(0, 9)] for _ in range(14)], "src": 0, "dst": 5}])

problem("trapped-rain-water", "Hard", """
    heights[i] is the height of a bar of width 1. Return how many units of rain water are trapped
    between the bars.
    Example: heights = [0, 1, 0, 2, 1, 0, 1, 3, 2, 1, 2, 1] -> 6.
    """, "trap(self, heights: List[int]) -> int", """
    left, right = 0, len(heights) - 1
    left_max = right_max = water = 0
    while left < right:
        if heights[left] < heights[right]:
            left_max = max(left_max, heights[left])
            water += left_max - heights[left]
            left += 1
        else:
            right_max = max(right_max, heights[right])
            water += right_max - heights[right]
            right -= 1
    return water
    """, [{"heights": [0, 1, 0, 2, 1, 0, 1, 3, 2, 1, 2, 1]}, {"heights": [4, 2, 0, 3, 2, 5]}, {"heights": []}, {"heights": [3]}, {"heights": ints(20, 0, 9)}])

problem("largest-histogram-rectangle", "Hard", """
    heights[i] is the height of a bar of width 1. Return the area of the largest rectangle that fits
    inside the histogram.
    Example: heights = [2, 1, 5, 6, 2, 3] -> 10.
    """, "largestRectangleArea(self, heights: List[int]) -> int", """
    stack, best = [], 0
    for i, h in enumerate(heights + [0]):
        start = i
        while stack and stack[-1][1] >= h:
            start, height = stack.pop()
            best = max(best, height * (i - start))
        stack.append((start, h))
    return best
    """, [{"heights": [2, 1, 5, 6, 2, 3]}, {"heights": [2, 4]}, {"heights": []}, {"heights": [1, 1, 1, 1]}, {"heights": ints(18, 0, 12)}])

problem("minimum-covering-window", "Hard", """
    Return the length of the shortest substring of s that contains every character of t (with
    multiplicity), or 0 if there is none.
    Example: s = "ADOBECODEBANC", t = "ABC" -> 4 ("BANC").
    """, "minWindowLength(self, s: str, t: str) -> int", """
    need = Counter(t)
    missing = len(t)
    best = 0
    left = 0
    for right, c in enumerate(s):
        if need[c] > 0:
            missing -= 1
        need[c] -= 1
        while missing == 0:
            if not best or right - left + 1 < best:
                best = right - left + 1
            need[s[left]] += 1
            if need[s[left]] > 0:
                missing += 1
            left += 1
    return best
    """, [{"s": "ADOBECODEBANC", "t": "ABC"}, {"s": "a", "t": "a"}, {"s": "a", "t": "aa"}, {"s": "aaflslflsldkalskaaa", "t": "aaa"}, {"s": word(40, "abcdef"), "t": "fed"}])

problem("count-inversions", "Hard", """
    Return the number of pairs (i, j) with i < j and nums[i] > nums[j]. nums may hold up to 10^5
    values, so a quadratic loop is too slow.
    Example: nums = [3, 1, 2] -> 2.
    """, "countInversions(self, nums: List[int]) -> int", """
    def sort(a):
        if len(a) <= 1:
            return a, 0
        mid = len(a) // 2
        left, x = sort(a[:mid])
        right, y = sort(a[mid:])
        merged, inv, i, j = [], x + y, 0, 0
        while i < len(left) and j < len(right):
            if left[i] <= right[j]:
                merged.append(left[i]); i += 1
            else:
                merged.append(right[j]); j += 1
                inv += len(left) - i
        return merged + left[i:] + right[j:], inv
    return sort(nums)[1]
    """, [{"nums": [3, 1, 2]}, {"nums": []}, {"nums": [1, 2, 3]}, {"nums": [5, 4, 3, 2, 1]}, {"nums": [2, 2, 1, 1]}, {"nums": ints(40, 0, 20)}])

problem("queens-count", "Hard", """
    Return the number of ways to place n queens on an n x n chess board so that no two attack each other.
    Example: n = 4 -> 2.
    """, "totalNQueens(self, n: int) -> int", """
    def place(row, cols, diag, anti):
        if row == n:
            return 1
        total = 0
        for c in range(n):
            if c not in cols and row - c not in diag and row + c not in anti:
                total += place(row + 1, cols | {c}, diag | {row - c}, anti | {row + c})
        return total
    return place(0, frozenset(), frozenset(), frozenset())
    """, [{"n": 4}, {"n": 1}, {"n": 2}, {"n": 5}, {"n": 6}, {"n": 8}])

problem("sliding-window-maximum", "Hard", """
    Return the maximum of every window of k consecutive elements of nums, from left to right.
    Example: nums = [1, 3, -1, -3, 5, 3, 6, 7], k = 3 -> [3, 3, 5, 5, 6, 7].
    """, "maxSlidingWindow(self, nums: List[int], k: int) -> List[int]", """
    window, out = deque(), []
    for i, x in enumerate(nums):
        while window and nums[window[-1]] <= x:
            window.pop()
        window.append(i)
        if window[0] <= i - k:
            window.popleft()
        if i >= k - 1:
            out.append(nums[window[0]])
    return out
    """, [{"nums": [1, 3, -1, -3, 5, 3, 6, 7], "k": 3}, {"nums": [1], "k": 1}, {"nums": [9, 8, 7, 6], "k": 2}, {"nums": [1, -1], "k": 2}, {"nums": ints(20), "k": 4}])

problem("gcd-of-list", "Easy", """
    Return the greatest common divisor of all the positive integers in nums.
    Example: nums = [12, 18, 24] -> 6.
    """, "gcdOfList(self, nums: List[int]) -> int", """
    g = 0
    for x in nums:
        g = gcd(g, x)
    return g
    """, [{"nums": [12, 18, 24]}, {"nums": [7]}, {"nums": [5, 7]}, {"nums": [100, 75, 50]}, {"nums": [2**10, 2**7 * 3, 2**9 * 5]}])

problem("pascal-row", "Easy", """
    Return row r (0-indexed) of Pascal's triangle.
    Example: r = 3 -> [1, 3, 3, 1].
    """, "getRow(self, r: int) -> List[int]", """
    row = [1]
    for _ in range(r):
        row = [a + b for a, b in zip([0] + row, row + [0])]
    return row
    """, [{"r": 3}, {"r": 0}, {"r": 1}, {"r": 6}, {"r": 20}])

EVAL = {"same-letters", "roman-numeral-value", "majority-value", "most-frequent-values", "word-segmentation",
        "spiral-walk", "decode-digit-string", "trapped-rain-water", "queens-count", "pascal-row"}


def _camel_method(signature: str) -> str:
    return signature.split("(", 1)[0]


def build_rows() -> list[dict]:
    rows = []
    for question_id, (slug, difficulty, description, signature, body, inputs) in enumerate(PROBLEMS, 1):
        starter = f"class Solution:\n    def {signature}:\n        "
        completion = f"class Solution:\n    def {signature}:\n" + textwrap.indent(body, " " * 8) + "\n"
        method = _camel_method(signature)
        namespace: dict = {}
        exec(_preamble() + completion, namespace)  # our own reference code, run here to compute the outputs
        cases = []
        for kwargs in inputs:
            value = getattr(namespace["Solution"](), method)(**json.loads(json.dumps(kwargs)))
            cases.append({"input": ", ".join(f"{k} = {v!r}" for k, v in kwargs.items()), "output": repr(value)})
        rows.append({
            "task_id": slug, "question_id": question_id, "difficulty": difficulty,
            "problem_description": description, "starter_code": starter, "entry_point": f"Solution().{method}",
            "input_output": cases, "completion": completion,
            "query": QUERY.format(description=description, starter=starter.rstrip()),
            "split": "eval" if slug in EVAL else "train",
        })
    return rows


def _preamble() -> str:
    from qrpo.sandbox.harness import PREAMBLE  # the same imports the sandbox gives every program

    return PREAMBLE


# ---------------------------------------------------------------------------------------------------------
# The easy tier (problems_easy.jsonl): one-line functions a 135M chat model sometimes gets right, so that the
# reference policy's pass rate is neither 0 nor 1 and quantiles carry signal. Same schema as above, but the
# starter code is a plain function and entry_point its bare name (which the code reward accepts too, HumanEval-style;
# the sandbox calls `name(**kwargs)`): SmolLM2-135M-Instruct drops the `class Solution:` wrapper and writes a top-level
# function, which `Solution().method` cannot call (12 trivial problems, 2 samples each: no test passed with a class
# starter, 26% with a plain one; README "Evaluation"). Inputs are keyword arguments: keep the parameter names.

OUT_EASY = Path(__file__).with_name("problems_easy.jsonl")
EASY: list[tuple] = []
easy_rng = random.Random(20261201)  # its own stream: the rows above do not change when this tier does


def easy(slug, description, signature, body, inputs):
    EASY.append((slug, "Easy", textwrap.dedent(description).strip(), signature, textwrap.dedent(body).strip("\n"), inputs))


def easy_ints(n, lo=-9, hi=9):
    return [easy_rng.randint(lo, hi) for _ in range(n)]


def easy_word(n, letters="abcdefghij"):
    return "".join(easy_rng.choice(letters) for _ in range(n))


# numbers
easy("add-two-integers", "Return the sum of the integers a and b.\nExample: a = 2, b = 3 -> 5.",
     "add(a: int, b: int) -> int", "return a + b",
     [{"a": 2, "b": 3}, {"a": 0, "b": 0}, {"a": -4, "b": 9}, {"a": 100, "b": -1}, {"a": 7, "b": 7}])
easy("subtract-two-integers", "Return a minus b.\nExample: a = 10, b = 4 -> 6.",
     "subtract(a: int, b: int) -> int", "return a - b",
     [{"a": 10, "b": 4}, {"a": 0, "b": 5}, {"a": -3, "b": -3}, {"a": 7, "b": -2}, {"a": 1, "b": 100}])
easy("multiply-two-integers", "Return the product of the integers a and b.\nExample: a = 3, b = 4 -> 12.",
     "multiply(a: int, b: int) -> int", "return a * b",
     [{"a": 3, "b": 4}, {"a": 0, "b": 9}, {"a": -2, "b": 5}, {"a": -3, "b": -3}, {"a": 1, "b": 77}])
easy("square-of-number", "Return n multiplied by itself.\nExample: n = 5 -> 25.",
     "square(n: int) -> int", "return n * n",
     [{"n": 5}, {"n": 0}, {"n": -3}, {"n": 1}, {"n": 12}])
easy("double-a-number", "Return twice the integer n.\nExample: n = 7 -> 14.",
     "double(n: int) -> int", "return 2 * n",
     [{"n": 7}, {"n": 0}, {"n": -4}, {"n": 1}, {"n": 50}])
easy("check-even", "Return True if the integer n is even, otherwise False.\nExample: n = 4 -> True.",
     "is_even(n: int) -> bool", "return n % 2 == 0",
     [{"n": 4}, {"n": 7}, {"n": 0}, {"n": -3}, {"n": 100}])
easy("check-odd", "Return True if the integer n is odd, otherwise False.\nExample: n = 3 -> True.",
     "is_odd(n: int) -> bool", "return n % 2 == 1",
     [{"n": 3}, {"n": 8}, {"n": 0}, {"n": -5}, {"n": 11}])
easy("absolute-value", "Return the absolute value of the integer x.\nExample: x = -5 -> 5.",
     "absolute_value(x: int) -> int", "return abs(x)",
     [{"x": -5}, {"x": 0}, {"x": 7}, {"x": -100}, {"x": 1}])
easy("larger-of-two", "Return the larger of the two integers a and b.\nExample: a = 3, b = 8 -> 8.",
     "max_of_two(a: int, b: int) -> int", "return max(a, b)",
     [{"a": 3, "b": 8}, {"a": 8, "b": 3}, {"a": -1, "b": -2}, {"a": 5, "b": 5}, {"a": 0, "b": 10}])
easy("smaller-of-two", "Return the smaller of the two integers a and b.\nExample: a = 3, b = 8 -> 3.",
     "min_of_two(a: int, b: int) -> int", "return min(a, b)",
     [{"a": 3, "b": 8}, {"a": 8, "b": 3}, {"a": -1, "b": -2}, {"a": 5, "b": 5}, {"a": 0, "b": 10}])
easy("largest-of-three", "Return the largest of the three integers a, b and c.\nExample: a = 4, b = 9, c = 2 -> 9.",
     "max_of_three(a: int, b: int, c: int) -> int", "return max(a, b, c)",
     [{"a": 4, "b": 9, "c": 2}, {"a": 1, "b": 1, "c": 1}, {"a": -5, "b": -2, "c": -9}, {"a": 7, "b": 0, "c": 3}, {"a": 0, "b": 2, "c": 6}])
easy("sign-of-number", "Return 1 if x is positive, -1 if x is negative and 0 if x is zero.\nExample: x = -7 -> -1.",
     "sign(x: int) -> int", """
     if x > 0:
         return 1
     if x < 0:
         return -1
     return 0
     """, [{"x": -7}, {"x": 0}, {"x": 3}, {"x": 100}, {"x": -1}])
easy("check-positive", "Return True if the integer x is greater than zero, otherwise False.\nExample: x = 5 -> True.",
     "is_positive(x: int) -> bool", "return x > 0",
     [{"x": 5}, {"x": 0}, {"x": -3}, {"x": 1}, {"x": -100}])
easy("check-divisible", "Return True if the integer a is divisible by the positive integer b, otherwise False.\n"
     "Example: a = 12, b = 4 -> True.",
     "is_divisible(a: int, b: int) -> bool", "return a % b == 0",
     [{"a": 12, "b": 4}, {"a": 7, "b": 2}, {"a": 0, "b": 5}, {"a": 9, "b": 3}, {"a": 10, "b": 7}])
easy("last-digit", "Return the last decimal digit of the non-negative integer n.\nExample: n = 1234 -> 4.",
     "last_digit(n: int) -> int", "return n % 10",
     [{"n": 1234}, {"n": 0}, {"n": 7}, {"n": 90}, {"n": 100001}])
easy("sum-one-to-n", "Return 1 + 2 + ... + n for a non-negative integer n (0 when n = 0).\nExample: n = 4 -> 10.",
     "sum_to_n(n: int) -> int", "return n * (n + 1) // 2",
     [{"n": 4}, {"n": 0}, {"n": 1}, {"n": 10}, {"n": 100}])
easy("factorial", "Return n! = 1 * 2 * ... * n for a non-negative integer n (0! = 1).\nExample: n = 5 -> 120.",
     "factorial(n: int) -> int", """
     result = 1
     for i in range(2, n + 1):
         result *= i
     return result
     """, [{"n": 5}, {"n": 0}, {"n": 1}, {"n": 3}, {"n": 10}])

# lists
easy("sum-of-list", "Return the sum of the numbers in the list nums (0 for an empty list).\nExample: nums = [1, 2, 3] -> 6.",
     "sum_list(nums: List[int]) -> int", "return sum(nums)",
     [{"nums": [1, 2, 3]}, {"nums": []}, {"nums": [-5, 5]}, {"nums": [10]}, {"nums": easy_ints(8)}])
easy("product-of-list", "Return the product of the numbers in the list nums (1 for an empty list).\n"
     "Example: nums = [2, 3, 4] -> 24.",
     "product_list(nums: List[int]) -> int", """
     result = 1
     for x in nums:
         result *= x
     return result
     """, [{"nums": [2, 3, 4]}, {"nums": []}, {"nums": [5]}, {"nums": [-1, 2]}, {"nums": [1, 0, 9]}])
easy("count-even-numbers", "Return how many numbers in the list nums are even.\nExample: nums = [1, 2, 4, 5] -> 2.",
     "count_evens(nums: List[int]) -> int", "return sum(1 for x in nums if x % 2 == 0)",
     [{"nums": [1, 2, 4, 5]}, {"nums": []}, {"nums": [1, 3]}, {"nums": [2, 2, 2]}, {"nums": easy_ints(9)}])
easy("largest-in-list", "Return the largest number in the non-empty list nums.\nExample: nums = [3, 9, 2] -> 9.",
     "max_of_list(nums: List[int]) -> int", "return max(nums)",
     [{"nums": [3, 9, 2]}, {"nums": [5]}, {"nums": [-1, -7]}, {"nums": [0, 0, 1]}, {"nums": easy_ints(8)}])
easy("smallest-in-list", "Return the smallest number in the non-empty list nums.\nExample: nums = [3, 9, 2] -> 2.",
     "min_of_list(nums: List[int]) -> int", "return min(nums)",
     [{"nums": [3, 9, 2]}, {"nums": [5]}, {"nums": [-1, -7]}, {"nums": [0, 0, 1]}, {"nums": easy_ints(8)}])
easy("first-element", "Return the first element of the non-empty list nums.\nExample: nums = [7, 1, 4] -> 7.",
     "first_element(nums: List[int]) -> int", "return nums[0]",
     [{"nums": [7, 1, 4]}, {"nums": [0]}, {"nums": [-2, 5]}, {"nums": [9, 9, 9]}, {"nums": easy_ints(6)}])
easy("last-element", "Return the last element of the non-empty list nums.\nExample: nums = [7, 1, 4] -> 4.",
     "last_element(nums: List[int]) -> int", "return nums[-1]",
     [{"nums": [7, 1, 4]}, {"nums": [0]}, {"nums": [-2, 5]}, {"nums": [9, 9, 3]}, {"nums": easy_ints(6)}])
easy("count-positive-numbers", "Return how many numbers in the list nums are greater than zero.\n"
     "Example: nums = [-1, 2, 0, 5] -> 2.",
     "count_positives(nums: List[int]) -> int", "return sum(1 for x in nums if x > 0)",
     [{"nums": [-1, 2, 0, 5]}, {"nums": []}, {"nums": [0, 0]}, {"nums": [1, 2, 3]}, {"nums": easy_ints(9)}])
easy("double-each-element", "Return a new list with every number of nums multiplied by 2.\nExample: nums = [1, 2, 3] -> [2, 4, 6].",
     "double_all(nums: List[int]) -> List[int]", "return [2 * x for x in nums]",
     [{"nums": [1, 2, 3]}, {"nums": []}, {"nums": [-4]}, {"nums": [0, 5]}, {"nums": easy_ints(5)}])
easy("reverse-list", "Return the elements of nums in reverse order, as a new list.\nExample: nums = [1, 2, 3] -> [3, 2, 1].",
     "reverse_list(nums: List[int]) -> List[int]", "return nums[::-1]",
     [{"nums": [1, 2, 3]}, {"nums": []}, {"nums": [5]}, {"nums": [4, 4, 1]}, {"nums": easy_ints(6)}])
easy("sort-ascending", "Return the numbers of nums sorted from smallest to largest, as a new list.\n"
     "Example: nums = [3, 1, 2] -> [1, 2, 3].",
     "sort_list(nums: List[int]) -> List[int]", "return sorted(nums)",
     [{"nums": [3, 1, 2]}, {"nums": []}, {"nums": [5]}, {"nums": [2, -1, 2, 0]}, {"nums": easy_ints(7)}])
easy("list-contains", "Return True if target is one of the numbers in nums, otherwise False.\n"
     "Example: nums = [4, 8, 1], target = 8 -> True.",
     "contains(nums: List[int], target: int) -> bool", "return target in nums",
     [{"nums": [4, 8, 1], "target": 8}, {"nums": [], "target": 1}, {"nums": [1, 2], "target": 3},
      {"nums": [0], "target": 0}, {"nums": [5, 6, 7], "target": 7}])
easy("count-occurrences", "Return how many times target appears in the list nums.\nExample: nums = [1, 2, 1, 1], target = 1 -> 3.",
     "count_occurrences(nums: List[int], target: int) -> int", "return nums.count(target)",
     [{"nums": [1, 2, 1, 1], "target": 1}, {"nums": [], "target": 4}, {"nums": [3, 4], "target": 5},
      {"nums": [7, 7], "target": 7}, {"nums": [easy_rng.randint(0, 3) for _ in range(10)], "target": 2}])
easy("sum-of-squares", "Return the sum of the squares of the numbers in nums.\nExample: nums = [1, 2, 3] -> 14.",
     "sum_of_squares(nums: List[int]) -> int", "return sum(x * x for x in nums)",
     [{"nums": [1, 2, 3]}, {"nums": []}, {"nums": [-2]}, {"nums": [0, 4]}, {"nums": easy_ints(6)}])
easy("range-of-list", "Return the largest number of the non-empty list nums minus its smallest number.\n"
     "Example: nums = [4, 9, 1] -> 8.",
     "spread(nums: List[int]) -> int", "return max(nums) - min(nums)",
     [{"nums": [4, 9, 1]}, {"nums": [5]}, {"nums": [-3, 3]}, {"nums": [2, 2, 2]}, {"nums": easy_ints(7)}])

# strings
easy("reverse-a-string", "Return the string s reversed.\nExample: s = \"abc\" -> \"cba\".",
     "reverse_string(s: str) -> str", "return s[::-1]",
     [{"s": "abc"}, {"s": ""}, {"s": "hello"}, {"s": "a"}, {"s": easy_word(9)}])
easy("length-of-string", "Return the number of characters in the string s.\nExample: s = \"hello\" -> 5.",
     "string_length(s: str) -> int", "return len(s)",
     [{"s": "hello"}, {"s": ""}, {"s": "a b"}, {"s": "xyz"}, {"s": easy_word(13)}])
easy("count-a-character", "Return how many times the character c appears in the string s.\n"
     "Example: s = \"banana\", c = \"a\" -> 3.",
     "count_char(s: str, c: str) -> int", "return s.count(c)",
     [{"s": "banana", "c": "a"}, {"s": "", "c": "x"}, {"s": "hello", "c": "l"}, {"s": "abc", "c": "z"},
      {"s": easy_word(15, "abc"), "c": "b"}])
easy("uppercase-string", "Return the string s with every letter in upper case.\nExample: s = \"Hello\" -> \"HELLO\".",
     "to_upper(s: str) -> str", "return s.upper()",
     [{"s": "Hello"}, {"s": ""}, {"s": "abc def"}, {"s": "ALREADY"}, {"s": "x1y2"}])
easy("plain-palindrome", "Return True if the string s reads the same forwards and backwards, otherwise False.\n"
     "Example: s = \"level\" -> True.",
     "is_palindrome(s: str) -> bool", "return s == s[::-1]",
     [{"s": "level"}, {"s": "hello"}, {"s": ""}, {"s": "ab"}, {"s": "abba"}])
easy("first-character", "Return the first character of the non-empty string s.\nExample: s = \"python\" -> \"p\".",
     "first_char(s: str) -> str", "return s[0]",
     [{"s": "python"}, {"s": "a"}, {"s": "Zebra"}, {"s": " x"}, {"s": easy_word(6)}])
easy("repeat-string", "Return the string s repeated n times (n >= 0).\nExample: s = \"ab\", n = 3 -> \"ababab\".",
     "repeat_string(s: str, n: int) -> str", "return s * n",
     [{"s": "ab", "n": 3}, {"s": "x", "n": 0}, {"s": "", "n": 5}, {"s": "hi", "n": 1}, {"s": "z", "n": 4}])
easy("join-two-strings", "Return the string a followed by the string b.\nExample: a = \"foo\", b = \"bar\" -> \"foobar\".",
     "concat(a: str, b: str) -> str", "return a + b",
     [{"a": "foo", "b": "bar"}, {"a": "", "b": "x"}, {"a": "x", "b": ""}, {"a": "", "b": ""}, {"a": "ab", "b": "ba"}])
easy("count-words", "Return the number of words in s; words are separated by single spaces.\n"
     "Example: s = \"the cat sat\" -> 3.",
     "count_words(s: str) -> int", "return len(s.split())",
     [{"s": "the cat sat"}, {"s": "hello"}, {"s": ""}, {"s": "a b c d e"}, {"s": "one two"}])
easy("count-lowercase-vowels", "Return how many characters of the lower-case string s are vowels (a, e, i, o, u).\n"
     "Example: s = \"banana\" -> 3.",
     "count_vowels(s: str) -> int", "return sum(1 for ch in s if ch in \"aeiou\")",
     [{"s": "banana"}, {"s": ""}, {"s": "rhythm"}, {"s": "aeiou"}, {"s": easy_word(12, "abcdeiou")}])

EASY_EVAL = {"subtract-two-integers", "check-odd", "largest-of-three", "sum-one-to-n", "product-of-list",
             "smallest-in-list", "count-positive-numbers", "sort-ascending", "sum-of-squares", "length-of-string",
             "uppercase-string", "join-two-strings"}


def build_easy_rows(first_question_id: int | None = None) -> list[dict]:
    """The easy tier's rows; question ids continue after the main set's."""
    start = len(PROBLEMS) + 1 if first_question_id is None else first_question_id
    order = list(EASY)
    random.Random(5).shuffle(order)  # numbers, lists and strings mixed, so that any first N rows of a split are a mix
    rows = []
    for question_id, (slug, difficulty, description, signature, body, inputs) in enumerate(order, start):
        name = signature.split("(", 1)[0]
        starter = f"def {signature}:\n    "
        completion = f"def {signature}:\n" + textwrap.indent(body, " " * 4) + "\n"
        namespace: dict = {}
        exec(_preamble() + completion, namespace)  # our own reference code, run here to compute the outputs
        cases = []
        for kwargs in inputs:
            value = namespace[name](**json.loads(json.dumps(kwargs)))
            cases.append({"input": ", ".join(f"{k} = {v!r}" for k, v in kwargs.items()), "output": repr(value)})
        rows.append({
            "task_id": slug, "question_id": question_id, "difficulty": difficulty,
            "problem_description": description, "starter_code": starter, "entry_point": name,
            "input_output": cases, "completion": completion,
            "query": QUERY.format(description=description, starter=starter.rstrip()),
            "split": "eval" if slug in EASY_EVAL else "train",
        })
    return rows


def render(rows: list[dict]) -> str:
    """The JSON Lines text of the rows, exactly as written to disk."""
    return "".join(json.dumps(row) + "\n" for row in rows)


def main():
    rows, easy_rows = build_rows(), build_easy_rows()
    ids = [r["task_id"] for r in rows + easy_rows]
    assert len(set(ids)) == len(ids) and EVAL <= set(ids) and EASY_EVAL <= {r["task_id"] for r in easy_rows}
    for out, table in ((OUT, rows), (OUT_EASY, easy_rows)):
        out.write_text(render(table))
        counts = Counter((r["split"], r["difficulty"]) for r in table)
        print(f"wrote {len(table)} problems to {out}: {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
