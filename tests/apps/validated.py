"""probe.application wrapped in wsgiref.validate.validator: any PEP 3333 violation by the
server (or the app) raises AssertionError, which the tests see as a 500."""

from wsgiref.validate import validator

import probe

application = validator(probe.application)
