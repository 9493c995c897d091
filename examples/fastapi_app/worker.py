"""The FastAPI example's worker, with the same settings as the web app (APP_SMS, then SMSDISPATCH_*):

    celery -A examples.fastapi_app.worker worker --pool threads --concurrency 20 --loglevel INFO
"""

import smsdispatch

from .main import AppSettings

app = smsdispatch.configure(AppSettings().sms)
