"""When a batch closes, and what one bot call is: the rules (``rules``), the quiet
period of the paced modes (``window``, ``pace``, ``smart``), the simulator
(``simulate``) and what the fragment log teaches (``analytics``)."""
