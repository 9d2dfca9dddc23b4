"""The ok / not ok lines the source checkers print (layout_check.py,
reference_check.py), and their counts for the summary line."""


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("ok - " + what)
        else:
            self.failed += 1
            print("not ok - " + what + (": " + detail if detail else ""))
