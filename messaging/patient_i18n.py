"""The words on the patient's secure page, in English and Spanish.

Plain dicts, no gettext: the page has two languages and a few dozen strings, and keeping them
side by side here makes a missing translation a failing test (``test_every_string_is_translated``)
rather than an English sentence in a Spanish page. Service errors arrive in English (they are
written for staff and the API); ``service_message`` maps the ones a patient can meet to these
strings. Nothing here may name a patient, a date of birth or a message: these are templates.
"""

from __future__ import annotations

import datetime

LANGUAGES = ("en", "es")
DEFAULT = "en"

EN: dict[str, str] = {
    "page_title": "Secure message",
    "invalid_title": "This link cannot be used",
    "invalid_body": "This link is invalid or has expired. Contact your clinic for a new one.",
    "ended_title": "Your session has ended",
    "ended_body": "To read your messages again, open the link in the text message from your clinic.",
    "signed_out_title": "You are signed out",
    "signed_out_body": "You can close this page. To read your messages again, open the link in the text "
                       "message from your clinic.",
    "verify_title": "Confirm it is you",
    "verify_intro": "To keep your message private, enter your date of birth.",
    "birth_date": "Date of birth",
    "birth_date_hint": "Use numbers. For example, April 21, 1990 is 4 21 1990.",
    "month": "Month",
    "day": "Day",
    "year": "Year",
    "continue": "Continue",
    "check_date": "Please check your date of birth.",
    "err_month": "Enter the month as a number from 1 to 12.",
    "err_day": "Enter the day as a number from 1 to 31.",
    "err_year": "Enter all four numbers of the year, for example 1990.",
    "err_day_month": "That day does not exist in that month.",
    "no_match": "That does not match our records. Please try again.",
    "too_many_tries": "Too many tries from this network. Please wait 15 minutes and try again.",
    "code_title": "Enter the code we text you",
    "code_intro": "This message needs one more check. We will text a 6-digit code to your phone.",
    "code_sent_intro": "We sent a 6-digit code to your phone. It works for 10 minutes.",
    "send_code": "Text me a code",
    "resend_code": "Send a new code",
    "code": "6-digit code",
    "code_hint": "Only numbers, for example 123456.",
    "verify_code": "Check code",
    "err_code_format": "Enter the 6 numbers from the text message.",
    "code_wrong": "That code is not right or has expired. Try again or send a new code.",
    "code_too_soon": "A code was just sent. Please wait a minute before asking again.",
    "code_too_many": "Too many codes were sent. Please open the link again later.",
    "code_order": "Confirm your date of birth first.",
    "thread_title": "Your messages",
    "from_you": "You",
    "no_messages": "There are no messages yet.",
    "reply_label": "Your reply",
    "reply_hint": "Up to {max} characters. For an emergency, call 911.",
    "send": "Send reply",
    "err_reply_required": "Please write a message.",
    "err_reply_too_long": "Use at most {max} characters.",
    "err_reply_chars": "Remove the unusual hidden characters (they can come from copy and paste).",
    "notice_sent": "Your reply was sent to the clinic.",
    "notice_confirm": "Thank you. Your appointment is confirmed.",
    "notice_cancel": "Your appointment is cancelled.",
    "notice_reschedule": "We told the clinic you want a new time. They will contact you.",
    "notice_code_sent": "We sent a code to your phone.",
    "notice_language": "Language changed.",
    "notice_verified": "Thank you. You can now read your messages.",
    "appointment_title": "Your appointment",
    "appointment_when": "When",
    "appointment_with": "With",
    "appointment_where": "Where",
    "appointment_type": "Type",
    "appointment_status": "Status",
    "appointment_question": "Can you come?",
    "appointment_note": "Note for the clinic (optional)",
    "confirm": "Confirm",
    "cancel": "Cancel appointment",
    "reschedule": "Ask to reschedule",
    "appointment_closed": "To change this appointment, please call the clinic.",
    "err_appointment": "This appointment can no longer be changed here. Please call the clinic.",
    "err_note_too_long": "Use at most {max} characters.",
    "status_booked": "Booked",
    "status_confirmed": "Confirmed",
    "status_cancelled": "Cancelled",
    "status_no_show": "Missed",
    "status_completed": "Completed",
    "status_reschedule_requested": "New time requested",
    "access_title": "Who at the clinic has viewed this conversation",
    "access_none": "No one at the clinic has opened this conversation yet.",
    "language": "Language",
    "change_language": "Change language",
    "sign_out": "Sign out",
    "sign_out_hint": "Sign out when you are done, especially on a shared phone.",
    "error_title": "Please check the form",
    "error_prefix": "Error",
    "at": "at",
}

ES: dict[str, str] = {
    "page_title": "Mensaje seguro",
    "invalid_title": "No se puede usar este enlace",
    "invalid_body": "Este enlace no es válido o ha caducado. Comuníquese con su clínica para recibir uno nuevo.",
    "ended_title": "Su sesión ha terminado",
    "ended_body": "Para volver a leer sus mensajes, abra el enlace del mensaje de texto de su clínica.",
    "signed_out_title": "Ha cerrado la sesión",
    "signed_out_body": "Puede cerrar esta página. Para volver a leer sus mensajes, abra el enlace del mensaje "
                       "de texto de su clínica.",
    "verify_title": "Confirme que es usted",
    "verify_intro": "Para proteger su mensaje, escriba su fecha de nacimiento.",
    "birth_date": "Fecha de nacimiento",
    "birth_date_hint": "Use números. Por ejemplo, el 21 de abril de 1990 es 21 4 1990.",
    "month": "Mes",
    "day": "Día",
    "year": "Año",
    "continue": "Continuar",
    "check_date": "Revise su fecha de nacimiento.",
    "err_month": "Escriba el mes como un número del 1 al 12.",
    "err_day": "Escriba el día como un número del 1 al 31.",
    "err_year": "Escriba los cuatro números del año, por ejemplo 1990.",
    "err_day_month": "Ese día no existe en ese mes.",
    "no_match": "Los datos no coinciden con nuestros registros. Inténtelo de nuevo.",
    "too_many_tries": "Demasiados intentos desde esta red. Espere 15 minutos e inténtelo de nuevo.",
    "code_title": "Escriba el código que le enviamos",
    "code_intro": "Este mensaje necesita una comprobación más. Le enviaremos un código de 6 dígitos a su teléfono.",
    "code_sent_intro": "Enviamos un código de 6 dígitos a su teléfono. Sirve durante 10 minutos.",
    "send_code": "Enviarme un código",
    "resend_code": "Enviar un código nuevo",
    "code": "Código de 6 dígitos",
    "code_hint": "Solo números, por ejemplo 123456.",
    "verify_code": "Comprobar el código",
    "err_code_format": "Escriba los 6 números del mensaje de texto.",
    "code_wrong": "El código no es correcto o ha caducado. Inténtelo de nuevo o pida un código nuevo.",
    "code_too_soon": "Acabamos de enviar un código. Espere un minuto antes de pedir otro.",
    "code_too_many": "Se enviaron demasiados códigos. Abra el enlace de nuevo más tarde.",
    "code_order": "Primero confirme su fecha de nacimiento.",
    "thread_title": "Sus mensajes",
    "from_you": "Usted",
    "no_messages": "Todavía no hay mensajes.",
    "reply_label": "Su respuesta",
    "reply_hint": "Hasta {max} caracteres. En caso de emergencia, llame al 911.",
    "send": "Enviar respuesta",
    "err_reply_required": "Escriba un mensaje.",
    "err_reply_too_long": "Use como máximo {max} caracteres.",
    "err_reply_chars": "Quite los caracteres ocultos poco comunes (pueden venir de copiar y pegar).",
    "notice_sent": "Su respuesta se envió a la clínica.",
    "notice_confirm": "Gracias. Su cita está confirmada.",
    "notice_cancel": "Su cita está cancelada.",
    "notice_reschedule": "Avisamos a la clínica que quiere otra hora. Se comunicarán con usted.",
    "notice_code_sent": "Enviamos un código a su teléfono.",
    "notice_language": "Se cambió el idioma.",
    "notice_verified": "Gracias. Ya puede leer sus mensajes.",
    "appointment_title": "Su cita",
    "appointment_when": "Cuándo",
    "appointment_with": "Con",
    "appointment_where": "Dónde",
    "appointment_type": "Tipo",
    "appointment_status": "Estado",
    "appointment_question": "¿Puede venir?",
    "appointment_note": "Nota para la clínica (opcional)",
    "confirm": "Confirmar",
    "cancel": "Cancelar la cita",
    "reschedule": "Pedir otra hora",
    "appointment_closed": "Para cambiar esta cita, llame a la clínica.",
    "err_appointment": "Esta cita ya no se puede cambiar aquí. Llame a la clínica.",
    "err_note_too_long": "Use como máximo {max} caracteres.",
    "status_booked": "Reservada",
    "status_confirmed": "Confirmada",
    "status_cancelled": "Cancelada",
    "status_no_show": "No asistió",
    "status_completed": "Completada",
    "status_reschedule_requested": "Pidió otra hora",
    "access_title": "Quién en la clínica ha visto esta conversación",
    "access_none": "Nadie en la clínica ha abierto esta conversación todavía.",
    "language": "Idioma",
    "change_language": "Cambiar idioma",
    "sign_out": "Cerrar sesión",
    "sign_out_hint": "Cierre la sesión al terminar, sobre todo en un teléfono compartido.",
    "error_title": "Revise el formulario",
    "error_prefix": "Error",
    "at": "a las",
}

STRINGS = {"en": EN, "es": ES}
LANGUAGE_NAMES = {"en": "English", "es": "Español"}

# English service messages a patient can meet (messaging.links / messaging.services) → our keys.
# If those messages change, update this map; unknown ones are shown as they are.
_SERVICE_MESSAGES = {
    "Enter the year as four digits, e.g. 1984.": "err_year",
    "Enter the month as a number from 1 to 12.": "err_month",
    "Enter the day as a number from 1 to 31.": "err_day",
    "That day does not exist in that month.": "err_day_month",
    "Please check your date of birth.": "check_date",
    "This field is required.": "err_reply_required",
    "Please write a message.": "err_reply_required",
    "Remove the control characters.": "err_reply_chars",
    "The message contains characters we cannot store.": "err_reply_chars",
    "A code was just sent. Please wait a minute before asking again.": "code_too_soon",
    "Too many codes were sent. Please open the link again later.": "code_too_many",
    "Confirm your date of birth first.": "code_order",
    "This appointment can no longer be changed here. Please call the clinic.": "err_appointment",
    "Not possible for this appointment any more.": "err_appointment",
}
_SERVICE_PREFIXES = {  # messages with a number in them
    "Use at most ": "err_reply_too_long",
    "The message is too long.": "err_reply_too_long",
    "The note is too long.": "err_note_too_long",
}

_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "es": ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
           "noviembre", "diciembre"),
}
_WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}


def language_or_default(lang: str | None) -> str:
    return lang if lang in STRINGS else DEFAULT


def strings(lang: str | None) -> dict[str, str]:
    return STRINGS[language_or_default(lang)]


def service_message(lang: str | None, text: str, **values) -> str:
    """A service's English message in the patient's language (or as it is, if unknown)."""
    key = _SERVICE_MESSAGES.get(text)
    if key is None:
        key = next((k for prefix, k in _SERVICE_PREFIXES.items() if text.startswith(prefix)), None)
    if key is None:
        return text
    return strings(lang)[key].format(**values)


def format_datetime(lang: str | None, moment: datetime.datetime, *, weekday: bool = True) -> str:
    """``moment`` (already in the reader's zone) as words: "Tuesday, March 10, 2026 at 10:00 AM" /
    "martes, 10 de marzo de 2026 a las 10:00"."""
    lang = language_or_default(lang)
    month = _MONTHS[lang][moment.month - 1]
    day_name = _WEEKDAYS[lang][moment.weekday()]
    if lang == "es":
        date = f"{moment.day} de {month} de {moment.year}"
        time = moment.strftime("%H:%M")
    else:
        date = f"{month} {moment.day}, {moment.year}"
        hour = moment.hour % 12 or 12
        time = f"{hour}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"
    words = f"{day_name}, {date}" if weekday else date
    return f"{words} {STRINGS[lang]['at']} {time}"
