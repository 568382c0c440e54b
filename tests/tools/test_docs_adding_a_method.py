"""docs/adding_a_method.md: its example method and its test template run as written."""
import os.path as osp
import re

import torch

DOC = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'docs', 'adding_a_method.md')


def test_the_pages_method_and_test_template_run():
    from graddrop_mtl.methods import METHODS
    blocks = re.findall(r'```python\n(.*?)```', open(DOC).read(), flags=re.S)
    assert len(blocks) == 2, 'the page has the method and the test template'
    namespace = {}
    try:
        exec(compile(blocks[0], DOC, 'exec'), namespace)           # defines and registers ScaledSum
        exec(compile(blocks[1], DOC, 'exec'), namespace)
        tests = [name for name in namespace if name.startswith('test_')]
        assert len(tests) == 3, tests
        for name in tests:
            namespace[name]()
        # the method does what its docstring says on a case the template does not cover
        out = METHODS['ScaledSum']().combine(torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
        torch.testing.assert_close(out, torch.tensor([1.0, 1.0]))
    finally:
        METHODS.pop('ScaledSum', None)
