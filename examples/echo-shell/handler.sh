#!/bin/sh
# A Flint function in shell, streaming mode: started once per request, the request body on
# stdin, the response on stdout, the request's metadata in Http_* variables.
echo "$Http_Method $Http_Path${Http_Query:+?$Http_Query}"
cat
