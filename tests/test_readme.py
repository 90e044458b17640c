"""The README's tour runs as written: documentation that cannot go stale."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def test_readme_python_blocks_run():
  blocks = re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.DOTALL)
  assert blocks, 'README has no python block'
  for block in blocks:
    exec(compile(block, str(README), 'exec'), {})


def test_readme_has_the_ci_test_command():
  text = README.read_text()
  marked = re.search(r'<!-- test-command -->\n```bash\n(.+?)\n```\n<!-- /test-command -->', text)
  assert marked, 'README lacks the marked test command that .ci/run executes'
  assert 'pytest' in marked.group(1)
