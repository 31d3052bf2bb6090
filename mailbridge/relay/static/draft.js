(function(){
var d=document,s=localStorage,g=function(i){return d.getElementById(i)},r=g('sent');
if(r){s.removeItem('mb:'+r.dataset.draft);return}
var f=d.forms[0],k='mb:'+f.getAttribute('action'),m=g('offline'),a=g('again'),b=g('erase'),o,n=0;
function each(c){[].forEach.call(f.elements,function(x){if(x.name&&!/hidden|file|button|submit/.test(x.type))c(x)})}
function save(){var o={};each(function(x){if(x.type!='radio'||x.checked)o[x.name]=x.value});s.setItem(k,JSON.stringify(o))}
try{o=JSON.parse(s.getItem(k))}catch(e){}
each(function(x){if(x.type=='radio'?x.checked:x.value)n=1});
if(o&&!n)each(function(x){var v=o[x.name];if(v!=null){if(x.type=='radio')x.checked=x.value==v;else x.value=v}});
function send(){m.hidden=a.hidden=true;var t=new FormData(f);
var x=new XMLHttpRequest(),p=g('up');x.open('POST',f.action);
if(p)x.upload.onprogress=function(e){p.hidden=!e.lengthComputable;p.value=e.loaded/e.total};
x.onload=function(){if(x.status<300)s.removeItem(k);d.open();d.write(x.responseText);d.close()};
x.onerror=function(){if(p)p.hidden=true;m.hidden=false;a.hidden=!navigator.onLine};
x.send(/multipart/.test(f.enctype)?t:new URLSearchParams(t))}
f.addEventListener('input',save);f.addEventListener('change',save);
f.addEventListener('submit',function(e){e.preventDefault();send()});
addEventListener('online',function(){if(!m.hidden)a.hidden=false});
a.onclick=send;b.hidden=g('kept').hidden=false;
b.onclick=function(){s.removeItem(k);each(function(x){if(x.type=='radio')x.checked=false;else x.value=''})}
})()
