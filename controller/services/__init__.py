"""What each API operation does, one module per area.

Each module declares what it offers the API (``DECLARATIONS``);
:mod:`controller.services.catalogue` collects them.
"""
